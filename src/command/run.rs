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
    /// At most this many retries ([`ALL_RETRIES`]: every rung).
    pub retries: u32,
    pub presets: bool,
    pub show: bool,
    pub json: bool,
    pub allow_cpu_fallback: bool,
    pub report: Option<PathBuf>,
    pub preload: Option<PathBuf>,
    /// After a retry that worked, write what changed to the user's
    /// configuration file.
    pub keep: bool,
    /// Run with AMD_LOG_LEVEL=N, its output in files of the run folder.
    pub log_level: Option<u32>,
}

/// `--retries all`.
pub const ALL_RETRIES: u32 = u32::MAX;

/// Why `run` could not start anything.
#[derive(Debug)]
pub enum RunError {
    /// Bad input from the user (a --preload that is not a usable library).
    Usage(String),
    /// A failure on our side.
    Failed(String),
}

impl From<String> for RunError {
    fn from(s: String) -> Self {
        RunError::Failed(s)
    }
}

impl From<&str> for RunError {
    fn from(s: &str) -> Self {
        RunError::Failed(s.to_string())
    }
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
    /// Settings from the configuration files' `env.NAME`/`unset` lines
    /// (what an earlier `run --keep` wrote), applied.
    pub kept: EnvChanges,
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
            return Err(format!(
                "rocm-fix: --preload: {} does not exist",
                p.display()
            ));
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
pub fn plan(opts: &RunOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, RunError> {
    let preload = find_preload(opts.preload.as_deref()).map_err(|e| {
        if opts.preload.is_some() {
            RunError::Usage(e)
        } else {
            RunError::Failed(e)
        }
    })?;
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
    // The configuration files: a mode set there (say `mode = on`, kept
    // by an earlier run) is the user's own; their env.NAME/unset lines are
    // the environment of the commands run starts.
    let env_os = |k: &str| env(k).map(OsString::from);
    let mut file_mode_set = false;
    let mut kept = EnvChanges::new();
    let mut paths = vec![PathBuf::from(rocm_fix_shared::config::SYSTEM_CONFIG)];
    paths.extend(rocm_fix_shared::config::user_config_path(&env_os));
    for path in paths {
        let Some(bytes) = rocm_fix_shared::config::read_config_file(&path).0 else {
            continue;
        };
        let files: [(&str, &[u8]); 1] = [("", &bytes)];
        let (cfg, _) = rocm_fix_shared::config::from_files(&files, &|_| None, false);
        file_mode_set |= cfg.mode != rocm_fix_shared::config::Mode::Auto;
        for (k, v) in rocm_fix_shared::config::run_environment(&bytes) {
            kept.insert(k, v);
        }
    }
    // Settings you set yourself win over kept ones; a kept removal applies.
    kept.retain(|k, v| v.is_none() || env(k).is_none());
    let observe_by_us =
        env("ROCM_FIX_MODE").is_none() && !file_mode_set && !any_active && !gpus.is_empty();
    if observe_by_us {
        changes.insert("ROCM_FIX_MODE".into(), Some("observe".into()));
    }
    for (k, v) in &kept {
        changes.insert(k.clone(), v.clone());
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
            if env(&s.name).is_some() || kept.contains_key(&s.name) {
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
        kept,
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

fn is_padding(r: &Rung) -> bool {
    r.env.iter().any(|(k, _)| k == "ROCM_FIX_PAD")
}

fn is_cpu_fallback(r: &Rung) -> bool {
    r.env.iter().any(|(k, _)| k == "HIP_VISIBLE_DEVICES")
}

/// The rungs to climb after `fault`, in order, at most `retries` of them.
///
/// By fault kind: a fault inside a buffer (journal `past_end` < 0) is not an
/// over-read, so no padding rung; otherwise padding, the answer to an
/// over-read, comes first among the rest. By evidence: a harmful override is
/// removed before anything else; the rest go confirmed, helped, mixed,
/// anecdotal (file order among equals); the CPU, which gives the GPU up,
/// last. With fewer retries than rungs, every confirmed rung is kept (a
/// confirmed rung is never left unreached) and the others fill what is left.
pub fn order_rungs(rungs: Vec<Rung>, fault: Option<&Fault>, retries: u32) -> Vec<Rung> {
    let inside = fault.and_then(|f| f.past_end).is_some_and(|p| p < 0);
    let mut ladder: Vec<(usize, Rung)> = rungs
        .into_iter()
        .filter(|r| !(inside && is_padding(r)))
        .enumerate()
        .collect();
    let class = |r: &Rung| {
        if r.when == "harmful-override" {
            0
        } else if is_cpu_fallback(r) {
            3
        } else if is_padding(r) {
            1
        } else {
            2
        }
    };
    let rank = |r: &Rung| match r.evidence {
        kb::Evidence::Confirmed => 0,
        kb::Evidence::Helped => 1,
        kb::Evidence::Mixed => 2,
        kb::Evidence::Anecdotal => 3,
        _ => 4,
    };
    ladder.sort_by_key(|(i, r)| (class(r), rank(r), *i));
    let n = retries as usize;
    if ladder.len() > n {
        let confirmed: Vec<usize> = ladder
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.evidence == kb::Evidence::Confirmed)
            .map(|(pos, _)| pos)
            .take(n)
            .collect();
        let mut room = n - confirmed.len();
        let mut pos = 0;
        ladder.retain(|(_, r)| {
            let keep = if confirmed.contains(&pos) {
                true
            } else if room > 0 && r.evidence != kb::Evidence::Confirmed {
                room -= 1;
                true
            } else {
                false
            };
            pos += 1;
            keep
        });
    }
    ladder.into_iter().map(|(_, r)| r).collect()
}

/// An HSA_OVERRIDE_GFX_VERSION that names another major generation than a
/// real chip (libhsakmt topology.c; ROCm#1880, #5238, rocm-systems PR #5686).
fn harmful_override(plan: &Plan, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let value = match plan.env.get("HSA_OVERRIDE_GFX_VERSION") {
        Some(v) => v.clone(),
        None => env("HSA_OVERRIDE_GFX_VERSION"),
    };
    let Some(v) = value.and_then(|v| topology::parse_override(&v)) else {
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

/// After an attempt with padding `used`, whether this fault calls for more:
/// it is past the end again, farther than that padding reaches (a GPU reports
/// the first page it could not read, so the first fault only bounds the
/// over-read from below), and twice its distance is more padding than was
/// used. The padding rung is then climbed again, with the larger size.
pub fn padding_grows(used: Option<&str>, fault: &Fault) -> bool {
    let Some(past) = fault.past_end.filter(|&p| p >= 0) else {
        return false;
    };
    let want =
        rocm_fix_shared::config::pad_value(&rocm_fix_shared::config::suggested_pad(past as u64));
    let had = used.and_then(rocm_fix_shared::config::pad_value);
    matches!((want, had), (Some(w), Some(h)) if w > h)
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

/// How an attempt with a fault record ended: killed (ROCr's abort), or
/// exiting on its own after the runtime returned the fault as an error
/// (clr 7.x: hipErrorIllegalAddress, which PyTorch raises as an exception).
fn ended_by(status: &ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code} after"),
        None => "died of".to_string(),
    }
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
    for (k, v) in &plan.kept {
        s.push_str(&format!(
            "  kept: {}  (from a configuration file's run environment)\n",
            show_changes(&EnvChanges::from([(k.clone(), v.clone())]))
        ));
    }
    s.push_str(&format!("environment: {}\n", show_changes(&plan.env)));
    if let Some(n) = opts.log_level {
        s.push_str(&format!(
            "AMD_LOG_LEVEL={n}: the runtime's log goes to files of the run folder\n"
        ));
    }
    if opts.retries == 0 {
        s.push_str("retries: none\n");
    } else {
        let rungs = order_rungs(rungs.to_vec(), None, opts.retries);
        if opts.retries == ALL_RETRIES {
            s.push_str("retries: all, climbing (after an over-read; a fault inside a buffer skips padding):\n");
        } else {
            s.push_str(&format!(
                "retries: up to {}, climbing (after an over-read; a fault inside a buffer skips padding):\n",
                opts.retries
            ));
        }
        for r in &rungs {
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
    retries: serde_json::Value,
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
    let ordered = order_rungs(rungs.to_vec(), None, opts.retries);
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
        retries: if opts.retries == ALL_RETRIES {
            serde_json::json!("all")
        } else {
            serde_json::json!(opts.retries)
        },
        ladder: ordered.iter().map(RungJson::from).collect(),
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
pub fn run(opts: &RunOptions) -> Result<ExitStatus, RunError> {
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
    // The padding rung of the attempt that just ran, if it was one.
    let mut padded_by: Option<Rung> = None;
    // Ordered once the first fault says what kind it is.
    let mut all_rungs = Some(rungs);
    let mut rungs_left = Vec::new().into_iter();
    let report_path = opts
        .report
        .clone()
        .unwrap_or_else(|| dir.join("report.json"));
    loop {
        let number = attempts.len() as u32 + 1;
        let journal = dir.join(format!("attempt-{number}.jsonl"));
        let (rung, changes) = match next.take() {
            Some((r, c)) => {
                padded_by = is_padding(&r).then(|| r.clone());
                (Some(r.id.clone()), c)
            }
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
        if let Some(n) = opts.log_level {
            // clr writes AMD_LOG_LEVEL_FILE + "_" + pid, one file per process
            // (rocclr/utils/flags.cpp, Flag::init); a clr without the
            // variable prints to stderr, as without it.
            cmd.env("AMD_LOG_LEVEL", n.to_string());
            cmd.env(
                "AMD_LOG_LEVEL_FILE",
                dir.join(format!("amd-log-attempt-{number}")),
            );
        }
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
            if let Some(n) = opts.log_level {
                say(&format!(
                    "AMD_LOG_LEVEL={n} output: {}/amd-log-attempt-*_PID (one file per process; \
                     a runtime without AMD_LOG_LEVEL_FILE printed it on stderr)",
                    dir.display()
                ));
            }
            if status.success() && attempts.len() > 1 {
                summary(opts, &plan, &attempts, &report_path);
            } else if status.signal() == Some(libc::SIGABRT) {
                say(&format!(
                    "the command aborted without a GPU fault record (not retried); run report: {}",
                    report_path.display()
                ));
            } else if attempts.iter().all(|a| a.fault.is_none())
                && opts.report.is_none()
                && opts.log_level.is_none()
            {
                // Nothing happened worth looking at: leave no folder behind.
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Ok(status);
        };
        if let Some(r) = all_rungs.take() {
            rungs_left = order_rungs(r, Some(&f), opts.retries).into_iter();
        }
        let retries_done = attempts.len() as u32 - 1;
        let used_pad = env_now.get("ROCM_FIX_PAD").cloned().flatten();
        let upcoming = if retries_done < opts.retries && STOP.load(Ordering::Relaxed) == 0 {
            match padded_by.take() {
                Some(r) if padding_grows(used_pad.as_deref(), &f) => Some(r),
                _ => rungs_left.next(),
            }
        } else {
            None
        };
        let what = format!(
            "attempt {number} {} a GPU memory fault at {} on {} ({})",
            ended_by(&status),
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

/// What the retries changed, from the first attempt's environment.
fn changed_since_first(attempts: &[Attempt]) -> (EnvChanges, Vec<String>) {
    let mut changed = EnvChanges::new();
    let mut rungs = Vec::new();
    for a in attempts.iter().skip(1) {
        changed.extend(a.changes.clone());
        rungs.extend(a.rung.clone());
    }
    (changed, rungs)
}

/// The lines `--keep` writes for these changes: rocm-fix's own settings by
/// their file keys, anything else as the environment of `rocm-fix run`.
pub fn keep_lines(changed: &EnvChanges) -> Vec<(String, String)> {
    changed
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            ("ROCM_FIX_PAD", Some(v)) => ("padding".to_string(), v.clone()),
            ("ROCM_FIX_MODE", Some(v)) => ("mode".to_string(), v.clone()),
            (_, Some(v)) => (format!("env.{k}"), v.clone()),
            (_, None) => ("unset".to_string(), k.clone()),
        })
        .collect()
}

/// Writes `lines` into the configuration file at `path`: a line with the
/// same key (for `unset`, the same key and value) is replaced, the others
/// are kept as they were; the old file is first copied to PATH.bak; the new
/// one is written to a temporary file and renamed over it. Returns the
/// backup's path, if there was a file to back up.
pub fn keep_in(
    path: &Path,
    lines: &[(String, String)],
    why: &str,
) -> Result<Option<PathBuf>, String> {
    use std::os::unix::fs::DirBuilderExt;
    let shown = path.display();
    let (old, warning) = rocm_fix_shared::config::read_config_file(path);
    if let Some(w) = warning {
        return Err(w);
    }
    let old = old
        .map(|b| {
            String::from_utf8(b).map_err(|_| format!("{shown} is not UTF-8 text; not changed"))
        })
        .transpose()?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let backup = match &old {
        Some(text) => {
            let mut b = path.as_os_str().to_owned();
            b.push(".bak");
            let b = PathBuf::from(b);
            std::fs::write(&b, text).map_err(|e| format!("cannot write {}: {e}", b.display()))?;
            Some(b)
        }
        None => None,
    };
    let same = |line: &str, key: &str, value: &str| {
        let Some((k, v)) = line.split_once('=') else {
            return false;
        };
        let k = k.trim();
        if key == "unset" {
            k.eq_ignore_ascii_case("unset") && v.trim() == value
        } else {
            k.eq_ignore_ascii_case(key)
        }
    };
    let mut out = String::new();
    for line in old.as_deref().unwrap_or("").lines() {
        let t = line.trim_start();
        if !t.starts_with('#') && lines.iter().any(|(k, v)| same(t, k, v)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if old.is_none() {
        out.push_str(
            "# rocm-fix: the user's settings, read after /etc/rocm-fix.conf and before the\n\
             # environment. env.NAME and unset lines are the environment rocm-fix run gives\n\
             # the commands it starts.\n",
        );
    }
    out.push_str(&format!("# {why}\n"));
    for (k, v) in lines {
        if v.is_empty() {
            out.push_str(&format!("{k} =\n"));
        } else {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, out)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {shown}: {e}")
        })?;
    Ok(backup)
}

/// After a retry that worked: what changed, the run report, how to keep it
/// (and, with --keep, keeping it).
fn summary(opts: &RunOptions, plan: &Plan, attempts: &[Attempt], report: &Path) {
    let (changed, rungs) = changed_since_first(attempts);
    let last = attempts.len();
    say(&format!(
        "attempt {last} completed after {} GPU memory fault{}: what changed from attempt 1: {} ({}). Run report: {}",
        last - 1,
        if last == 2 { "" } else { "s" },
        show_changes(&changed),
        rungs.join(", "),
        report.display()
    ));
    let lines = keep_lines(&changed);
    let env_os = |k: &str| std::env::var_os(k);
    let Some(path) = rocm_fix_shared::config::user_config_path(&env_os) else {
        say("to keep it, set the same variables yourself (no HOME: no user configuration file)");
        return;
    };
    let text: Vec<String> = lines.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let scope = if lines.iter().all(|(k, _)| k == "padding" || k == "mode") {
        "the preload reads it in every process"
    } else {
        "padding and mode apply in every process; env. and unset lines under rocm-fix run"
    };
    if !opts.keep {
        say(&format!(
            "to keep it: run again with --keep, which writes '{}' to {} ({scope})",
            text.join("', '"),
            path.display()
        ));
        return;
    }
    let why = format!(
        "rocm-fix run --keep: {} ({}), after a GPU memory fault on {}",
        show_changes(&changed),
        rungs.join(", "),
        if plan.chips.is_empty() {
            "this machine".to_string()
        } else {
            plan.chips.join(", ")
        }
    );
    match keep_in(&path, &lines, &why) {
        Ok(backup) => say(&format!(
            "kept: wrote '{}' to {}{} ({scope})",
            text.join("', '"),
            path.display(),
            backup.map_or(String::new(), |b| format!(
                "; the previous file is {}",
                b.display()
            ))
        )),
        Err(e) => say(&format!("not kept: {e}")),
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
            kept: EnvChanges::new(),
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
    fn padding_grows_when_the_fault_moved_past_it() {
        let past = |p: i64| Fault {
            past_end: Some(p),
            ..Default::default()
        };
        // 2M of padding, then a fault 2 MiB past the end: 4M is next.
        assert!(padding_grows(Some("2M"), &past(2 << 20)));
        // Within what was used: padding is not the answer.
        assert!(!padding_grows(Some("2M"), &past(4096)));
        assert!(!padding_grows(Some("2M"), &past(-4096)));
        assert!(!padding_grows(None, &past(2 << 20)));
        // At the limit it cannot grow.
        assert!(!padding_grows(Some("1G"), &past(1 << 30)));
    }

    #[test]
    fn the_ladder_follows_the_fault_and_the_evidence() {
        let ladder = kb::ladder().unwrap();
        let ids = |rs: &[Rung]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let over = Fault {
            past_end: Some(65536),
            ..Default::default()
        };
        let inside = Fault {
            past_end: Some(-4096),
            ..Default::default()
        };
        assert_eq!(
            ids(&order_rungs(ladder.clone(), Some(&over), ALL_RETRIES)),
            [
                "drop-harmful-override",
                "pad-2m",
                "no-hip-caching",
                "miopen-solvers",
                "cpu-fallback"
            ]
        );
        assert_eq!(
            ids(&order_rungs(ladder.clone(), Some(&inside), ALL_RETRIES)),
            [
                "drop-harmful-override",
                "no-hip-caching",
                "miopen-solvers",
                "cpu-fallback"
            ],
            "no padding for a fault inside a buffer"
        );
        // Two retries: both confirmed rungs, in ladder order.
        assert_eq!(
            ids(&order_rungs(ladder.clone(), Some(&over), 2)),
            ["drop-harmful-override", "cpu-fallback"]
        );
        let no_cpu: Vec<Rung> = ladder.into_iter().filter(|r| !is_cpu_fallback(r)).collect();
        assert_eq!(
            ids(&order_rungs(no_cpu, Some(&over), 2)),
            ["drop-harmful-override", "pad-2m"]
        );
    }

    #[test]
    fn keep_replaces_the_same_keys_and_backs_the_file_up() {
        let dir = std::env::temp_dir().join(format!("rocm-fix-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = dir.join("sub/rocm-fix.conf");
        let changed = EnvChanges::from([
            ("ROCM_FIX_PAD".to_string(), Some("4M".to_string())),
            ("MIOPEN_DEBUG_CONV_GEMM".to_string(), Some("0".to_string())),
            ("HSA_OVERRIDE_GFX_VERSION".to_string(), None),
            ("HIP_VISIBLE_DEVICES".to_string(), Some(String::new())),
        ]);
        let lines = keep_lines(&changed);
        assert_eq!(
            keep_in(&f, &lines, "why").unwrap(),
            None,
            "no file, no backup"
        );
        let first = std::fs::read_to_string(&f).unwrap();
        assert!(
            first.contains("\npadding = 4M\n")
                && first.contains("\nunset = HSA_OVERRIDE_GFX_VERSION\n"),
            "{first}"
        );
        let backup = keep_in(&f, &lines, "again").unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(backup).unwrap(), first);
        let second = std::fs::read_to_string(&f).unwrap();
        for key in [
            "padding =",
            "env.MIOPEN_DEBUG_CONV_GEMM =",
            "unset =",
            "env.HIP_VISIBLE_DEVICES =",
        ] {
            assert_eq!(second.matches(key).count(), 1, "{key}: {second}");
        }
        let env = rocm_fix_shared::config::run_environment(second.as_bytes());
        assert!(env.contains(&("HIP_VISIBLE_DEVICES".to_string(), Some(String::new()))));
        let (cfg, w) =
            rocm_fix_shared::config::from_files(&[("f", second.as_bytes())], &|_| None, false);
        assert_eq!((cfg.pad_bytes, w.len()), (4 << 20, 0), "{w:?}");
        std::fs::remove_dir_all(&dir).unwrap();
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
