//! `rocm-fix run` / `rocm-fix-run`: start a command with librocm_fix.so
//! preloaded, and if it dies of a GPU memory fault, run it again with the
//! next rung of the retry ladder (src/shared/kb/presets.kb).
//!
//! The child's stdin, stdout and stderr are its own (inherited, never
//! piped); signals from the terminal reach it directly (same process group),
//! and signals sent to the supervisor alone are forwarded. A fault is known
//! from the fault journal the engine writes (ROCM_FIX_JOURNAL), one per
//! attempt; any other failure is never retried.

use crate::json;
use crate::kb::RungJson;
use rocm_fix_shared::kb::{self, Rung};
use rocm_fix_shared::pciids;
use rocm_fix_shared::topology::{self, Family};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub command: Vec<OsString>,
    pub retries: u32,
    pub presets: bool,
    pub show: bool,
    pub json: bool,
    pub allow_cpu_fallback: bool,
    pub report: Option<PathBuf>,
    pub preload: Option<PathBuf>,
}

/// An environment change: Some(value) sets, None removes.
pub type EnvChanges = BTreeMap<String, Option<String>>;

/// The plan for the first attempt.
#[derive(Debug, Clone)]
pub struct Plan {
    pub preload: PathBuf,
    pub preset: Option<String>,
    /// (name, value, evidence, issue) of each preset setting applied.
    pub settings: Vec<(String, String, String, String)>,
    /// Settings the preset has but the user's own environment already sets.
    pub kept_user: Vec<String>,
    pub env: EnvChanges,
    pub chips: Vec<String>,
    /// rocm-fix chose observe mode itself (no GPU it applies to).
    pub observe_by_us: bool,
}

/// The real chips of this machine, as gfx names. (Not family labels: a
/// knowledge-base entry for one chip, gfx1031 say, "covers" the query
/// "RDNA2", so a family query would apply gfx1031's settings to a gfx1030.)
pub fn machine_chips(env: &dyn Fn(&str) -> Option<String>) -> (Vec<String>, Vec<topology::Gpu>) {
    let root = env(rocm_fix_shared::process::TOPOLOGY_VAR)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| topology::default_root().to_string());
    let gpus = topology::read_topology(Path::new(&root));
    let mut chips = Vec::new();
    for g in &gpus {
        let name = topology::gfx_name(g.gfx_target_version);
        if !chips.contains(&name) {
            chips.push(name);
        }
    }
    (chips, gpus)
}

/// Where librocm_fix.so is: next to this program (the build folder), then
/// the distribution's library folders.
pub fn find_preload(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(format!("rocm-fix: {} does not exist", p.display()));
        }
        // Checked as `preload enable` checks it: an ELF of this machine that a
        // test process runs cleanly with, rather than an ld.so error in the
        // command's output and a run without rocm-fix.
        crate::preload::check_elf(p)
            .and_then(|()| crate::preload::check_loads(p))
            .map_err(|e| format!("rocm-fix: --preload: {e}"))?;
        return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("librocm_fix.so"));
            candidates.push(dir.join("../lib/x86_64-linux-gnu/librocm_fix.so"));
            candidates.push(dir.join("../lib/rocm-fix/librocm_fix.so"));
        }
    }
    candidates.push(PathBuf::from("/usr/lib/x86_64-linux-gnu/librocm_fix.so"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| {
            "rocm-fix: cannot find librocm_fix.so (looked next to this program and in \
             /usr/lib/x86_64-linux-gnu); give it with --preload PATH"
                .to_string()
        })
}

/// Decides the first attempt's environment.
pub fn plan(opts: &RunOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, String> {
    let preload = find_preload(opts.preload.as_deref())?;
    let (chips, gpus) = machine_chips(env);
    let mut changes = EnvChanges::new();
    let existing = env("LD_PRELOAD").unwrap_or_default();
    let pre = preload.to_string_lossy().to_string();
    let ld = if existing.split([':', ' ']).any(|e| e == pre) {
        existing
    } else if existing.is_empty() {
        pre
    } else {
        format!("{pre}:{existing}")
    };
    changes.insert("LD_PRELOAD".into(), Some(ld));
    // Faults are only journaled where the engine keeps books: with no GPU it
    // applies to (an RDNA3 card, say), watch in observe mode.
    let any_active = gpus.iter().any(|g| {
        matches!(
            topology::family(g.gfx_target_version),
            Family::Rdna1 | Family::Rdna2
        )
    });
    let observe_by_us = env("ROCM_FIX_MODE").is_none() && !any_active && !gpus.is_empty();
    if observe_by_us {
        changes.insert("ROCM_FIX_MODE".into(), Some("observe".into()));
    }
    let argv: Vec<String> = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .collect();
    let preset = if opts.presets {
        kb::preset_for(&argv)
    } else {
        None
    };
    let mut settings = Vec::new();
    let mut kept_user = Vec::new();
    if let Some(p) = &preset {
        for s in p.applicable_settings(&chips) {
            if env(&s.name).is_some() {
                kept_user.push(s.name.clone());
                continue;
            }
            if changes.contains_key(&s.name) {
                continue;
            }
            changes.insert(s.name.clone(), Some(s.value.clone()));
            settings.push((
                s.name.clone(),
                s.value.clone(),
                s.evidence.as_str().to_string(),
                s.issue.clone(),
            ));
        }
    }
    Ok(Plan {
        preload,
        preset: preset.map(|p| p.id),
        settings,
        kept_user,
        env: changes,
        chips,
        observe_by_us,
    })
}

/// The rungs this run may climb, in order.
pub fn applicable_rungs(
    opts: &RunOptions,
    plan: &Plan,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Rung> {
    let argv: Vec<String> = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .collect();
    let torch = plan.preset.is_some()
        || argv
            .iter()
            .any(|a| a.contains("python") || a.contains("torch"));
    let harmful_override = harmful_override(plan, env);
    kb::ladder()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| match r.when.as_str() {
            "torch" => torch,
            "harmful-override" => harmful_override,
            _ => true,
        })
        .filter(|r| {
            opts.allow_cpu_fallback || !r.env.iter().any(|(k, _)| k == "HIP_VISIBLE_DEVICES")
        })
        .collect()
}

/// An HSA_OVERRIDE_GFX_VERSION that names another major generation than a
/// real chip (rocm-facts §5; ROCm#1880, #5238, rocm-systems PR #5686).
fn harmful_override(plan: &Plan, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let Some(v) = env("HSA_OVERRIDE_GFX_VERSION").and_then(|v| topology::parse_override(&v)) else {
        return false;
    };
    plan.chips
        .iter()
        .filter_map(|c| pciids::parse_gfx_name(c))
        .any(|real| real / 10000 != v / 10000)
}

/// One fault record from the journal (the raw JSON line and the fields we use).
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub raw: String,
    pub address: Option<String>,
    pub past_end: Option<i64>,
    pub size: Option<u64>,
    pub kind: Option<String>,
    pub gfx: Option<String>,
}

/// The fields of a journal line that `run` uses (the engine writes more).
#[derive(serde::Deserialize)]
struct Record {
    event: String,
    address: Option<String>,
    gfx: Option<String>,
    allocation: Option<RecordAllocation>,
}

#[derive(serde::Deserialize)]
struct RecordAllocation {
    size: Option<u64>,
    kind: Option<String>,
    past_end: Option<i64>,
}

/// The first GPU memory fault recorded in `journal`.
pub fn read_fault(journal: &Path) -> Option<Fault> {
    let text = std::fs::read_to_string(journal).ok()?;
    text.lines().find_map(|line| {
        let r: Record = serde_json::from_str(line).ok()?;
        let a = r.allocation;
        (r.event == "gpu-memory-fault").then(|| Fault {
            raw: line.to_string(),
            address: r.address,
            past_end: a.as_ref().and_then(|a| a.past_end),
            size: a.as_ref().and_then(|a| a.size),
            kind: a.and_then(|a| a.kind),
            gfx: r.gfx,
        })
    })
}

/// The environment changes of a rung, adapted to the fault: the padding rung
/// pads at least twice as far as the kernel over-read.
pub fn rung_changes(rung: &Rung, fault: Option<&Fault>, plan: &Plan) -> EnvChanges {
    let mut c = EnvChanges::new();
    for (k, v) in &rung.env {
        let mut v = v.clone();
        if k == "ROCM_FIX_PAD" {
            let past = fault.and_then(|f| f.past_end).unwrap_or(0).max(0) as u64;
            v = rocm_fix_shared::config::suggested_pad(past);
            if plan.observe_by_us {
                // Padding only happens where rocm-fix is active.
                c.insert("ROCM_FIX_MODE".into(), Some("on".into()));
            }
        }
        c.insert(k.clone(), Some(v));
    }
    for k in &rung.unset {
        c.insert(k.clone(), None);
    }
    c
}

static CHILD: AtomicI32 = AtomicI32::new(0);
/// A terminating signal (TERM, HUP, or INT/QUIT sent to us) arrived: no
/// further attempt is started.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    let child = CHILD.load(Ordering::Relaxed);
    if child <= 0 {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
    // SIGINT/SIGQUIT from the terminal (si_code > 0: sent by the kernel)
    // already reached the child, which shares our process group.
    if (sig == libc::SIGINT || sig == libc::SIGQUIT) && code > 0 {
        return;
    }
    // SAFETY: kill is async-signal-safe.
    unsafe { libc::kill(child, sig) };
}

fn install_forwarding() {
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: reading the current disposition; then a zeroed sigaction with
        // our handler and SA_SIGINFO|SA_RESTART.
        unsafe {
            // A signal we were started with ignored (nohup, `cmd &` in a
            // script) stays ignored, for us and for the command.
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// One attempt's outcome, for the report.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: u32,
    pub changes: EnvChanges,
    pub rung: Option<String>,
    pub status: ExitStatus,
    pub fault: Option<Fault>,
}

/// How an attempt ended, as the run report writes it: `{"code":N}` or
/// `{"signal":N}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum ExitJson {
    Code(i32),
    Signal(i32),
}

fn exit_json(s: &ExitStatus) -> Option<ExitJson> {
    match (s.code(), s.signal()) {
        (Some(c), _) => Some(ExitJson::Code(c)),
        (_, Some(sig)) => Some(ExitJson::Signal(sig)),
        _ => None,
    }
}

/// The run report (`report.json`).
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    command: Vec<String>,
    preload: String,
    preset: Option<&'a str>,
    chips: &'a [String],
    attempts: Vec<AttemptJson<'a>>,
}

#[derive(serde::Serialize)]
struct AttemptJson<'a> {
    attempt: u32,
    rung: Option<&'a str>,
    /// A name with `null` is removed.
    env: &'a EnvChanges,
    exit: Option<ExitJson>,
    /// The journal's record, as the engine wrote it.
    gpu_fault: Option<&'a RawValue>,
}

pub fn report_json(opts: &RunOptions, plan: &Plan, attempts: &[Attempt]) -> String {
    json::compact(&ReportJson {
        command: opts
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        preload: plan.preload.to_string_lossy().into_owned(),
        preset: plan.preset.as_deref(),
        chips: &plan.chips,
        attempts: attempts
            .iter()
            .map(|a| AttemptJson {
                attempt: a.number,
                rung: a.rung.as_deref(),
                env: &a.changes,
                exit: exit_json(&a.status),
                gpu_fault: a
                    .fault
                    .as_ref()
                    .and_then(|f| serde_json::from_str(&f.raw).ok()),
            })
            .collect(),
    })
}

fn describe(f: &Fault) -> String {
    match (f.past_end, f.size, f.kind.as_deref()) {
        (Some(p), Some(s), Some(k)) if p >= 0 => {
            format!("{p} bytes past the end of a {s}-byte {k} allocation")
        }
        (Some(_), Some(s), Some(k)) => format!("inside a {s}-byte {k} allocation"),
        _ => "at an address rocm-fix cannot attribute to any allocation".to_string(),
    }
}

fn show_changes(c: &EnvChanges) -> String {
    c.iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("unset {k}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--show`: what would be set, then exit.
pub fn show_text(opts: &RunOptions, plan: &Plan, rungs: &[Rung]) -> String {
    let mut s = String::new();
    s.push_str(&format!("preload: {}\n", plan.preload.display()));
    s.push_str(&format!(
        "chips: {}\n",
        if plan.chips.is_empty() {
            "no AMD GPU found".to_string()
        } else {
            plan.chips.join(", ")
        }
    ));
    match &plan.preset {
        Some(p) => s.push_str(&format!("preset: {p}\n")),
        None if opts.presets => s.push_str("preset: none matches this command\n"),
        None => s.push_str("preset: off (--no-presets)\n"),
    }
    for (k, v, ev, issue) in &plan.settings {
        s.push_str(&format!("  set {k}={v}  (evidence: {ev}; issue {issue})\n"));
    }
    for k in &plan.kept_user {
        s.push_str(&format!("  keep your {k}\n"));
    }
    s.push_str(&format!("environment: {}\n", show_changes(&plan.env)));
    if opts.retries == 0 {
        s.push_str("retries: none\n");
    } else {
        s.push_str(&format!("retries: up to {}, climbing:\n", opts.retries));
        for r in rungs {
            s.push_str(&format!(
                "  {}: {} (evidence: {})\n",
                r.id,
                r.title,
                r.evidence.as_str()
            ));
        }
    }
    s
}

/// `--show --json`.
#[derive(serde::Serialize)]
struct ShowJson<'a> {
    preload: String,
    chips: &'a [String],
    preset: Option<&'a str>,
    settings: Vec<SettingJson<'a>>,
    environment: &'a EnvChanges,
    retries: u32,
    ladder: Vec<RungJson<'a>>,
}

#[derive(serde::Serialize)]
struct SettingJson<'a> {
    name: &'a str,
    value: &'a str,
    evidence: &'a str,
    issue: &'a str,
}

pub fn show_json(opts: &RunOptions, plan: &Plan, rungs: &[Rung]) -> String {
    json::compact(&ShowJson {
        preload: plan.preload.to_string_lossy().into_owned(),
        chips: &plan.chips,
        preset: plan.preset.as_deref(),
        settings: plan
            .settings
            .iter()
            .map(|(name, value, evidence, issue)| SettingJson {
                name,
                value,
                evidence,
                issue,
            })
            .collect(),
        environment: &plan.env,
        retries: opts.retries,
        ladder: rungs.iter().map(RungJson::from).collect(),
    })
}

/// How many run folders are kept: enough for the last few bug reports.
const KEPT_RUNS: usize = 20;

/// Where run folders live: one place the user can find, not /tmp
/// (`$XDG_STATE_HOME/rocm-fix/runs`, else `~/.local/state/rocm-fix/runs`;
/// the temporary folder only without a home).
pub fn runs_dir() -> PathBuf {
    let abs = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(state) = abs(std::env::var_os("XDG_STATE_HOME")) {
        return state.join("rocm-fix/runs");
    }
    match abs(std::env::var_os("HOME")) {
        Some(home) => home.join(".local/state/rocm-fix/runs"),
        None => std::env::temp_dir().join(format!(
            "rocm-fix-runs-{}",
            // SAFETY: getuid has no preconditions.
            unsafe { libc::getuid() }
        )),
    }
}

/// A new run folder (0700), after removing all but the newest
/// [`KEPT_RUNS`] - 1 earlier ones (names sort by time).
fn run_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = runs_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)?;
    if let Ok(rd) = std::fs::read_dir(&base) {
        let mut old: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .map(|e| e.path())
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(KEPT_RUNS - 1);
        for d in old.into_iter().take(excess) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = base.join(format!(
        "run-{}.{:09}-{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    ));
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "rocm-fix-run: {msg}");
}

/// Runs the command; returns the status to exit with.
pub fn run(opts: &RunOptions) -> Result<ExitStatus, String> {
    let env = |k: &str| std::env::var(k).ok();
    let plan = plan(opts, &env)?;
    let rungs = applicable_rungs(opts, &plan, &env);
    if opts.show {
        let text = if opts.json {
            show_json(opts, &plan, &rungs) + "\n"
        } else {
            show_text(opts, &plan, &rungs)
        };
        print!("{text}");
        return Ok(ExitStatus::from_raw(0));
    }
    let dir = run_dir().map_err(|e| format!("rocm-fix: cannot create a run folder: {e}"))?;
    install_forwarding();
    let mut env_now = plan.env.clone();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut next: Option<(Rung, EnvChanges)> = None;
    let mut rungs_left = rungs.into_iter();
    let report_path = opts
        .report
        .clone()
        .unwrap_or_else(|| dir.join("report.json"));
    loop {
        let number = attempts.len() as u32 + 1;
        let journal = dir.join(format!("attempt-{number}.jsonl"));
        let (rung, changes) = match next.take() {
            Some((r, c)) => (Some(r.id.clone()), c),
            None => (None, plan.env.clone()),
        };
        if number > 1 {
            env_now.extend(changes.clone());
        }
        let (prog, args) = opts
            .command
            .split_first()
            .ok_or("rocm-fix: no command given")?;
        let mut cmd = Command::new(prog);
        cmd.args(args);
        for (k, v) in &env_now {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("ROCM_FIX_JOURNAL", &journal);
        // The command dies with the supervisor, even by SIGKILL (which
        // cannot be forwarded): otherwise it runs on, orphaned and unwatched.
        let supervisor = std::process::id() as libc::pid_t;
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl, getppid and raise are async-signal-safe, as the
        // child of a fork requires.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The supervisor died before the prctl: nothing will signal us.
                if libc::getppid() != supervisor {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // As a shell would: 127 command not found, 126 found but not
                // runnable; and no run folder left behind for a run that
                // never started.
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => 127,
                    _ => 126,
                };
                say(&format!("cannot run {}: {e}", prog.to_string_lossy()));
                if number == 1 && opts.report.is_none() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Ok(ExitStatus::from_raw(code << 8));
            }
        };
        CHILD.store(child.id() as i32, Ordering::Relaxed);
        let status = child
            .wait()
            .map_err(|e| format!("rocm-fix: waiting for the command: {e}"))?;
        CHILD.store(0, Ordering::Relaxed);
        let fault = read_fault(&journal);
        attempts.push(Attempt {
            number,
            changes,
            rung,
            status,
            fault: fault.clone(),
        });
        if let Err(e) = std::fs::write(&report_path, report_json(opts, &plan, &attempts) + "\n") {
            say(&format!(
                "cannot write the run report {}: {e}",
                report_path.display()
            ));
        }
        // A fault record alone is not enough: a child process may have faulted
        // while the command itself carried on and succeeded. Never re-run that.
        let fault = fault.filter(|_| !status.success());
        let Some(f) = fault else {
            if status.signal() == Some(libc::SIGABRT) {
                say(&format!(
                    "the command aborted without a GPU fault record (not retried); run report: {}",
                    report_path.display()
                ));
            } else if attempts.iter().all(|a| a.fault.is_none()) && opts.report.is_none() {
                // Nothing happened worth looking at: leave no folder behind.
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Ok(status);
        };
        let retries_done = attempts.len() as u32 - 1;
        let upcoming = if retries_done < opts.retries && STOP.load(Ordering::Relaxed) == 0 {
            rungs_left.next()
        } else {
            None
        };
        let what = format!(
            "attempt {number} died of a GPU memory fault at {} on {} ({})",
            f.address.as_deref().unwrap_or("an unknown address"),
            f.gfx.as_deref().unwrap_or("the GPU"),
            describe(&f)
        );
        match upcoming {
            Some(r) => {
                let c = rung_changes(&r, Some(&f), &plan);
                say(&format!(
                    "{what}. Next: attempt {} with {} — {} (evidence: {}).",
                    number + 1,
                    show_changes(&c),
                    r.title,
                    r.evidence.as_str()
                ));
                next = Some((r, c));
            }
            None => {
                say(&format!(
                    "{what}. No retry left ({}); run report: {}",
                    if opts.retries == 0 {
                        "--no-retry"
                    } else {
                        "ladder or --retries exhausted"
                    },
                    report_path.display()
                ));
                return Ok(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(env: &[(&str, &str)]) -> Rung {
        Rung {
            id: "r".into(),
            title: "t".into(),
            when: "always".into(),
            evidence: kb::Evidence::Anecdotal,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unset: vec![],
            issues: vec![],
            notes: vec![],
            sources: vec![],
        }
    }

    fn plan_stub(observe: bool) -> Plan {
        Plan {
            preload: "/x/librocm_fix.so".into(),
            preset: None,
            settings: vec![],
            kept_user: vec![],
            env: EnvChanges::new(),
            chips: vec!["gfx1100".into()],
            observe_by_us: observe,
        }
    }

    #[test]
    fn the_padding_rung_pads_twice_the_overshoot() {
        let f = Fault {
            past_end: Some(3 << 20),
            ..Default::default()
        };
        let c = rung_changes(
            &rung(&[("ROCM_FIX_PAD", "2M")]),
            Some(&f),
            &plan_stub(false),
        );
        assert_eq!(c.get("ROCM_FIX_PAD"), Some(&Some("6M".to_string())));
        let c = rung_changes(&rung(&[("ROCM_FIX_PAD", "2M")]), None, &plan_stub(true));
        assert_eq!(c.get("ROCM_FIX_PAD"), Some(&Some("2M".to_string())));
        assert_eq!(
            c.get("ROCM_FIX_MODE"),
            Some(&Some("on".to_string())),
            "padding needs an active mode"
        );
    }

    #[test]
    fn journal_records_are_read_back() {
        let dir = std::env::temp_dir().join(format!("rocm-fix-sup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("j.jsonl");
        std::fs::write(
            &j,
            "{\"event\":\"gpu-memory-fault\",\"address\":\"0x7f0000005000\",\"gfx\":\"gfx1010\",\"allocation\":{\"base\":\"0x7f0000000000\",\"size\":10000,\"padding\":8192,\"kind\":\"device\",\"device\":0,\"past_end\":10480}}\n",
        )
        .unwrap();
        let f = read_fault(&j).unwrap();
        assert_eq!(
            (f.past_end, f.size, f.kind.as_deref()),
            (Some(10480), Some(10000), Some("device"))
        );
        assert_eq!(
            describe(&f),
            "10480 bytes past the end of a 10000-byte device allocation"
        );
        assert!(read_fault(&dir.join("missing")).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_run_report_keeps_its_shape() {
        let opts = RunOptions {
            command: vec!["train\n\u{1b}[2J".into()],
            ..Default::default()
        };
        let raw = "{\"event\":\"gpu-memory-fault\",\"address\":\"0x10\"}";
        let attempt = |number, status: i32, fault: Option<Fault>| Attempt {
            number,
            changes: [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), None),
            ]
            .into_iter()
            .collect(),
            rung: (number > 1).then(|| "pad".to_string()),
            status: ExitStatus::from_raw(status),
            fault,
        };
        let fault = Fault {
            raw: raw.into(),
            ..Default::default()
        };
        let j = report_json(
            &opts,
            &plan_stub(false),
            &[attempt(1, 6, Some(fault)), attempt(2, 0, None)],
        );
        assert_eq!(
            j,
            format!(
                "{{\"command\":[\"train\\n\\u001b[2J\"],\"preload\":\"/x/librocm_fix.so\",\
                 \"preset\":null,\"chips\":[\"gfx1100\"],\"attempts\":[\
                 {{\"attempt\":1,\"rung\":null,\"env\":{{\"A\":\"1\",\"B\":null}},\
                 \"exit\":{{\"signal\":6}},\"gpu_fault\":{raw}}},\
                 {{\"attempt\":2,\"rung\":\"pad\",\"env\":{{\"A\":\"1\",\"B\":null}},\
                 \"exit\":{{\"code\":0}},\"gpu_fault\":null}}]}}"
            )
        );
    }

    #[test]
    fn harmful_overrides_cross_families_or_sit_on_native_chips() {
        let p = plan_stub(false);
        let env = |v: &'static str| {
            move |k: &str| (k == "HSA_OVERRIDE_GFX_VERSION").then(|| v.to_string())
        };
        assert!(harmful_override(&p, &env("10.3.0")));
        assert!(!harmful_override(&p, &env("11.0.0")));
        assert!(!harmful_override(&p, &env("11.0.1")));
        assert!(!harmful_override(&p, &|_: &str| None));
    }
}
