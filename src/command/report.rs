//! `rocm-fix report`: one Markdown file and one JSON file a user can attach
//! to a bug report, with what maintainers ask for (ROCm/ROCm#5051, #5724,
//! ROCm/amdgpu#204): the system (doctor's findings), the last run's report
//! and fault journals, the kernel log's amdgpu lines around the fault with
//! every page-fault report decoded and matched to the journal by address,
//! ROCr's fault line, versions and the environment variables that matter.
//! Home paths, the user and host names are redacted unless asked not to.
//! Whatever could not be read is listed with the reason.

use crate::kernel_log::{self, KernelLog};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What to collect and where to write it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The run folder; `None`: the newest one.
    pub run: Option<PathBuf>,
    /// A kernel log file ('-': stdin); `None`: dmesg, then journalctl -k.
    pub kernel_log: Option<String>,
    pub redact: bool,
    /// Where the two files go.
    pub out_dir: PathBuf,
}

/// Something that could not be read, and why.
#[derive(Debug, Clone)]
pub struct Missing {
    pub what: String,
    pub why: String,
}

/// The folder runs are kept in (run.rs makes them there).
pub fn runs_base() -> PathBuf {
    crate::run::runs_dir()
}

/// The newest `run-*` folder of `base` (where `rocm-fix run` keeps them).
pub fn last_run(base: &Path) -> Option<PathBuf> {
    std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// Environment variables that change what ROCm does.
fn relevant_env() -> Vec<(String, String)> {
    const PREFIXES: [&str; 10] = [
        "HSA_", "HIP_", "ROCR_", "AMD_", "ROCM_", "MIOPEN_", "PYTORCH_", "HCC_", "GPU_", "TORCH_",
    ];
    let mut v: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)) || k == "LD_PRELOAD")
        .collect();
    v.sort();
    v
}

/// The kernel log: the file given, or `dmesg`, or `journalctl -k`.
pub fn read_kernel_log(opts: &Options, missing: &mut Vec<Missing>) -> Option<(String, String)> {
    if let Some(src) = &opts.kernel_log {
        // A day of `journalctl -k` is a few MiB; the bound keeps /dev/zero or
        // a runaway pipe from eating the machine's memory, as triage's does.
        const MAX_LOG: u64 = 256 << 20;
        let r = if src == "-" {
            crate::input::read_capped(&mut std::io::stdin().lock(), MAX_LOG)
        } else {
            crate::input::read_regular(Path::new(src), MAX_LOG)
        };
        return match r {
            Ok(text) => Some((String::from_utf8_lossy(&text).into_owned(), src.clone())),
            Err(e) => {
                missing.push(Missing {
                    what: format!("kernel log {src}"),
                    why: e.to_string(),
                });
                None
            }
        };
    }
    for (prog, args) in [
        ("dmesg", &[][..]),
        ("journalctl", &["-k", "-b", "--no-pager", "-q"][..]),
    ] {
        match std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() && !o.stdout.is_empty() => {
                return Some((
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    format!("{prog} {}", args.join(" ")).trim().to_string(),
                ));
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
                let why = if prog == "dmesg" {
                    format!(
                        "{} (kernel.dmesg_restrict is probably 1: run as root, or pass \
                         `sudo dmesg > k.txt` with --kernel-log k.txt)",
                        if err.is_empty() { "no output" } else { &err }
                    )
                } else if o.stdout.is_empty() && err.is_empty() {
                    "no kernel messages readable (not in the systemd-journal or adm group?)"
                        .to_string()
                } else {
                    err
                };
                missing.push(Missing {
                    what: prog.to_string(),
                    why,
                });
            }
            Err(e) => missing.push(Missing {
                what: prog.to_string(),
                why: format!("cannot run it: {e}"),
            }),
        }
    }
    None
}

/// The redactions to apply: (text, replacement), longest first.
pub fn redactions() -> Vec<(String, String)> {
    let mut r = Vec::new();
    if let Some(home) = std::env::var("HOME").ok().filter(|h| h.len() > 1) {
        r.push((home, "~".to_string()));
    }
    for k in ["USER", "LOGNAME"] {
        if let Some(u) = std::env::var(k).ok().filter(|u| u.len() > 1 && u != "root") {
            r.push((u, "<user>".to_string()));
        }
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_string();
        if h.len() > 1 && h != "localhost" {
            r.push((h, "<host>".to_string()));
        }
    }
    r.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    r.dedup();
    r
}

/// Applies the redactions, and hides any other /home/NAME.
pub fn redact_text(s: &str, rules: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (t, with) in rules {
        out = out.replace(t.as_str(), with);
    }
    // Other users' homes: /home/NAME/ -> /home/<user>/
    let mut res = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("/home/") {
        res.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        if end > 0 && &rest[..end] != "<user>" {
            res.push_str("<user>");
            rest = &rest[end..];
        }
    }
    res.push_str(rest);
    res
}

pub fn redact_value(v: &mut Value, rules: &[(String, String)]) {
    match v {
        Value::String(s) => *s = redact_text(s, rules),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, rules)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_value(x, rules)),
        _ => {}
    }
}

/// The bundle, as (markdown, json).
pub fn collect(opts: &Options) -> (String, Value) {
    let mut missing = Vec::new();
    // The system.
    let doctor = crate::doctor::diagnose(&crate::doctor::Options::from_system());
    let doctor_json: Value = serde_json::from_str(&doctor.to_json()).unwrap_or(Value::Null);
    // The run.
    let run_dir = opts.run.clone().or_else(|| last_run(&runs_base()));
    let mut run_report = Value::Null;
    let mut journal_text = String::new();
    let mut journals = Vec::new();
    let amd_logs = run_dir.as_deref().map(amd_logs).unwrap_or_default();
    match &run_dir {
        None => missing.push(Missing {
            what: "run folder".into(),
            why: format!(
                "no run folder in {} (run the command with rocm-fix-run, or pass --run DIR)",
                runs_base().display()
            ),
        }),
        Some(dir) => {
            match std::fs::read_to_string(dir.join("report.json")) {
                Ok(t) => run_report = serde_json::from_str(&t).unwrap_or(Value::String(t)),
                Err(e) => missing.push(Missing {
                    what: format!("{}/report.json", dir.display()),
                    why: e.to_string(),
                }),
            }
            let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            if names.is_empty() {
                missing.push(Missing {
                    what: format!("fault journal in {}", dir.display()),
                    why: "no attempt-N.jsonl: no GPU fault was recorded in that run".into(),
                });
            }
            for p in names {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    for line in t.lines() {
                        if let Ok(v) = serde_json::from_str::<Value>(line) {
                            journals.push(v);
                        }
                    }
                    journal_text.push_str(&t);
                }
            }
        }
    }
    // The kernel log.
    let (log, log_source) = match read_kernel_log(opts, &mut missing) {
        Some((text, src)) => (kernel_log::parse(&text), Some(src)),
        None => (KernelLog::default(), None),
    };
    let matches = kernel_log::match_journal(&log.faults, &journal_text);
    // The last 200 amdgpu lines: the fault and what led to it.
    let lines: Vec<&String> = log
        .amdgpu_lines
        .iter()
        .skip(log.amdgpu_lines.len().saturating_sub(200))
        .collect();
    let env = relevant_env();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    let mut json = json!({
        "rocm_fix_version": crate::VERSION,
        "kernel": kernel,
        "run_folder": run_dir.as_ref().map(|d| d.display().to_string()),
        "run_report": run_report,
        "fault_journal": journals,
        "kernel_log_source": log_source,
        "kernel_faults": log.faults,
        "rocr_faults": log.rocr_faults,
        "kernel_faults_suppressed": log.suppressed,
        "journal_matches": matches,
        "amdgpu_lines": lines,
        "amd_logs": amd_logs.iter().map(|l| json!({
            "file": l.file, "lines": l.lines, "tail": l.tail,
        })).collect::<Vec<_>>(),
        "environment": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "doctor": doctor_json,
        "not_read": missing.iter().map(|m| json!({"what": m.what, "why": m.why})).collect::<Vec<_>>(),
        "redacted": opts.redact,
    });
    // Markdown.
    let mut md = String::new();
    let _ = writeln!(md, "# rocm-fix {} crash report\n", crate::VERSION);
    let _ = writeln!(md, "- kernel: {}", kernel.as_deref().unwrap_or("unknown"));
    let _ = writeln!(
        md,
        "- run folder: {}",
        run_dir
            .as_ref()
            .map_or("none".to_string(), |d| d.display().to_string())
    );
    let _ = writeln!(
        md,
        "- kernel log: {}\n",
        log_source.as_deref().unwrap_or("not read (see below)")
    );
    let _ = writeln!(md, "## GPU page faults in the kernel log\n");
    if log.faults.is_empty() {
        let _ = writeln!(md, "None found.\n");
    }
    for (i, f) in log.faults.iter().enumerate() {
        let _ = writeln!(md, "{}. {}", i + 1, f.headline());
        for m in &f.meaning {
            let _ = writeln!(md, "   - {m}");
        }
        for m in matches.iter().filter(|m| m.kernel_fault == i) {
            let _ = writeln!(
                md,
                "   - matches rocm-fix's journal: fault at {}, {}",
                m.address, m.relation
            );
        }
    }
    if log.suppressed > 0 {
        let _ = writeln!(
            md,
            "\nThe kernel suppressed {} further reports (rate limit).",
            log.suppressed
        );
    }
    if !log.rocr_faults.is_empty() {
        let _ = writeln!(md, "\n## ROCr\n");
        for r in &log.rocr_faults {
            let _ = writeln!(md, "    {}", r.line);
        }
    }
    let _ = writeln!(md, "\n## rocm-fix fault journal\n");
    if journals.is_empty() {
        let _ = writeln!(md, "No record.");
    }
    for j in &journals {
        let _ = writeln!(md, "    {j}");
    }
    if !run_report.is_null() {
        let _ = writeln!(
            md,
            "\n## Run report\n\n```json\n{}\n```",
            serde_json::to_string_pretty(&run_report).unwrap_or_default()
        );
    }
    let _ = writeln!(md, "\n## Environment\n");
    if env.is_empty() {
        let _ = writeln!(md, "No ROCm-related variable set.");
    }
    for (k, v) in &env {
        let _ = writeln!(md, "    {k}={v}");
    }
    let _ = writeln!(
        md,
        "\n## System (rocm-fix doctor)\n\n```\n{}```",
        doctor.to_text()
    );
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "\n## Kernel log, amdgpu lines (last {})\n\n```",
            lines.len()
        );
        for l in &lines {
            let _ = writeln!(md, "{l}");
        }
        let _ = writeln!(md, "```");
    }
    let _ = writeln!(md, "\n## Runtime log (AMD_LOG_LEVEL)\n");
    if amd_logs.is_empty() {
        let _ = writeln!(
            md,
            "None in the run folder: `rocm-fix run --log-level 4 …` captures it."
        );
    }
    for l in &amd_logs {
        let _ = writeln!(
            md,
            "{}: {} lines, the last {}:\n\n```",
            l.file,
            l.lines,
            l.tail.len()
        );
        for t in &l.tail {
            let _ = writeln!(md, "{t}");
        }
        let _ = writeln!(md, "```\n");
    }
    let _ = writeln!(md, "\n## Not read\n");
    if missing.is_empty() {
        let _ = writeln!(md, "Everything was read.");
    }
    for m in &missing {
        let _ = writeln!(md, "- {}: {}", m.what, m.why);
    }
    if opts.redact {
        let rules = redactions();
        md = redact_text(&md, &rules);
        redact_value(&mut json, &rules);
        let _ = writeln!(
            md,
            "\n(Home folders, the user and host names are redacted; --no-redact keeps them.)"
        );
    }
    (md, json)
}

/// One runtime log of the run (`rocm-fix run --log-level`): clr writes
/// AMD_LOG_LEVEL_FILE + "_" + pid, one file per process.
pub struct AmdLog {
    pub file: String,
    pub lines: usize,
    /// The last lines, where the fault is: a level-4 log runs to millions.
    pub tail: Vec<String>,
}

const AMD_LOG_TAIL: usize = 300;

fn amd_logs(dir: &Path) -> Vec<AmdLog> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("amd-log-attempt-"))
                })
                .collect()
        })
        .unwrap_or_default();
    // Attempt 2 before attempt 10.
    paths.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let n: String = name["amd-log-attempt-".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (n.parse::<u64>().unwrap_or(u64::MAX), name)
    });
    paths.iter().filter_map(|p| amd_log(p)).collect()
}

/// Streams the file: only the tail is kept, however long the log.
fn amd_log(path: &Path) -> Option<AmdLog> {
    use std::io::BufRead;
    let file = crate::input::open_regular(path).ok()?;
    let mut reader = std::io::BufReader::new(file);
    let mut tail = std::collections::VecDeque::with_capacity(AMD_LOG_TAIL);
    let mut lines = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        lines += 1;
        if tail.len() == AMD_LOG_TAIL {
            tail.pop_front();
        }
        // A line of a few KiB at most: a runaway one is cut.
        buf.truncate(4096);
        let line = String::from_utf8_lossy(&buf);
        tail.push_back(line.trim_end_matches(['\n', '\r']).to_string());
    }
    Some(AmdLog {
        file: path.file_name()?.to_string_lossy().into_owned(),
        lines,
        tail: tail.into(),
    })
}

/// Writes `rocm-fix-report.md` and `rocm-fix-report.json`; returns their
/// paths and what could not be read.
pub fn write(opts: &Options) -> Result<(PathBuf, PathBuf, Vec<String>), String> {
    let (md, json) = collect(opts);
    let md_path = opts.out_dir.join("rocm-fix-report.md");
    let json_path = opts.out_dir.join("rocm-fix-report.json");
    let not_read = json["not_read"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m["what"].as_str().unwrap_or(""),
                        m["why"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    std::fs::write(&md_path, md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    std::fs::write(&json_path, text)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    Ok((md_path, json_path, not_read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_homes_users_and_hosts() {
        let rules = vec![
            ("/home/alice".to_string(), "~".to_string()),
            ("alice".to_string(), "<user>".to_string()),
            ("alexpc".to_string(), "<host>".to_string()),
        ];
        assert_eq!(
            redact_text("/home/alice/x.py on alexpc by alice; /home/bob/y", &rules),
            "~/x.py on <host> by <user>; /home/<user>/y"
        );
        let mut v = json!({"a": ["/home/alice/t", {"b": "alexpc"}], "n": 3});
        redact_value(&mut v, &rules);
        assert_eq!(v, json!({"a": ["~/t", {"b": "<host>"}], "n": 3}));
    }

    #[test]
    fn the_newest_run_folder_is_the_last_run() {
        let base =
            std::env::temp_dir().join(format!("rocm-fix-report-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("run-1.1")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(base.join("run-2.2")).unwrap();
        std::fs::create_dir_all(base.join("other")).unwrap();
        assert_eq!(last_run(&base), Some(base.join("run-2.2")));
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(last_run(&base), None);
    }
}
