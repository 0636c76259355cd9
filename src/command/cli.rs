//! The `rocm-fix` command (and `rocm-fix-run`, the same program under a
//! second name). Arguments are parsed by hand: five subcommands with a few
//! flags each do not need a parser crate.

use crate::run::{self, RunOptions};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;

/// Exit codes (documented in `--help` and README).
pub const EXIT_OK: i32 = 0;
/// doctor found problems worth acting on; triage found warnings.
pub const EXIT_FINDINGS: i32 = 1;
/// Bad usage, or input that is not what the command reads.
pub const EXIT_USAGE: i32 = 2;
/// Something failed on our side (a file we cannot read or write, no preload).
pub const EXIT_ERROR: i32 = 3;

const VERSION_TEXT: &str = concat!("rocm-fix ", env!("CARGO_PKG_VERSION"));

const HELP: &str = "\
rocm-fix: keep ROCm workloads on AMD RDNA1/RDNA2 GPUs alive through
\"Memory access fault ... Page not present\" crashes.

Usage:
  rocm-fix run [OPTIONS] [--] COMMAND [ARGS...]   (also: rocm-fix-run COMMAND ...)
  rocm-fix doctor [--sysfs DIR] [--json]
  rocm-fix triage FILE|- [--json]
  rocm-fix kb list [--json]
  rocm-fix kb show ID [--json]
  rocm-fix preload enable|disable|status [--root DIR] [--library PATH]
  rocm-fix kernel-params plan|apply|revert [--root DIR] [--dry-run] [--yes] [--json]
  rocm-fix --help | --version

Commands:
  run      start COMMAND with librocm_fix.so preloaded and the presets that match
           it; if it dies of a GPU memory fault, run it again with the next rung
           of the retry ladder
  doctor   what GPU this really is, driver, kernel and ROCm versions, risky
           settings, and the known issues that match, with sources
  triage   the real chip of every agent in a pasted rocminfo or KFD properties file
  kb       the known-issues knowledge base
  preload  list librocm_fix.so in /etc/ld.so.preload (every process on the
           machine), remove it, or show what is there
  kernel-params
           the amdgpu kernel parameters worth setting for these GPUs (with their
           evidence), written as a boot-loader drop-in, and undone exactly

Run 'rocm-fix COMMAND --help' for a command's options.

Exit codes:
  0  success (run: the command's own status is passed through)
  1  doctor/triage found problems worth acting on
  2  bad usage, or input that is not rocminfo / KFD properties
  3  an error on rocm-fix's side (cannot read or write a file, no librocm_fix.so)
";

const RUN_HELP: &str = "\
Usage: rocm-fix run [OPTIONS] [--] COMMAND [ARGS...]
       rocm-fix-run [OPTIONS] [--] COMMAND [ARGS...]

Starts COMMAND with librocm_fix.so prepended to LD_PRELOAD (what was there is
kept), a fault journal of its own, and the presets that match it (ultralytics,
python with torch, ComfyUI, AUTOMATIC1111, ollama/llama.cpp; settings you set
yourself win). Its stdin, stdout and stderr are its own; signals reach it; its
exit status is ours. If it dies of a GPU memory fault it is run again with the
next rung of the ladder: larger padding, MIOpen solver restrictions, PyTorch
caching off, removal of a harmful HSA_OVERRIDE_GFX_VERSION, and with
--allow-cpu-fallback the CPU. Any other failure is never retried.

Options:
  --retries N            retry at most N times (default 3)
  --no-retry             never retry
  --no-presets           apply no preset
  --show                 print what would be set and exit (with --json: as JSON)
  --allow-cpu-fallback   allow the last rung: hide the GPUs so frameworks use the CPU
  --report FILE          write the run report (JSON) here (default: the run folder)
  --preload PATH         the librocm_fix.so to use (default: next to this program)
  -h, --help             this help
";

const DOCTOR_HELP: &str = "\
Usage: rocm-fix doctor [--sysfs DIR] [--json]

What to paste into a bug report, and what to do: every GPU with its real chip
(from the KFD topology) and what the runtime reports, whether an override is in
effect and whether it is harmful for that chip, kernel version, amdgpu module
parameters, ROCm version, firmware versions where readable, risky environment
variables, whether librocm_fix.so is in /etc/ld.so.preload, and the known issues
that match, each with its mitigation, evidence level and sources.

Options:
  --sysfs DIR   read a captured sysfs tree (DIR/class/kfd/kfd/topology) instead of /sys
  --json        print JSON
Exit status: 0 nothing to act on, 1 problems found.
";

const TRIAGE_HELP: &str = "\
Usage: rocm-fix triage FILE|- [--json]

Reads a pasted `rocminfo` output (old and new formats, several agents,
truncated pastes) or a KFD `properties` file, and finds the real chip of every
GPU agent even when HSA_OVERRIDE_GFX_VERSION rewrote the names: from the Chip
ID (PCI device id), gfx_target_version, SIMDs per CU. '-' reads stdin.
Exit status: 0 no warnings, 1 warnings found, 2 input that is neither.
";

const KB_HELP: &str = "\
Usage: rocm-fix kb list [--json]
       rocm-fix kb show ID [--json]

The known issues behind \"Page not present\" faults: symptoms, chips, cause,
mitigations with their evidence level (confirmed, helped, mixed, anecdotal,
harmful, none-found) and sources.
";

const PRELOAD_HELP: &str = "\
Usage: rocm-fix preload enable|disable|status [--root DIR] [--library PATH]

enable   validates the library (it exists, is an x86_64 ELF, and a test process
         runs cleanly with it preloaded), then adds it to ROOT/etc/ld.so.preload:
         atomically (temp file, fsync, rename), after a backup
         (ld.so.preload.rocm-fix.bak), keeping every other line and comment;
         running it twice changes nothing
disable  removes only rocm-fix's line: the file is back byte for byte as it was
         before enable (and removed if enable created it)
status   what the file lists and whether rocm-fix's library loads

Options:
  --root DIR      edit DIR/etc/ld.so.preload (a chroot or image); without it,
                  enable and disable need root
  --library PATH  the library as seen inside the root
                  (default: /usr/lib/x86_64-linux-gnu/librocm_fix.so with --root,
                  else the one next to this program)
Exit status: 0 done (or nothing to do), 1 status: not enabled or broken,
2 bad usage, 3 refused or failed (nothing was changed).
";

const KPARAMS_HELP: &str = "\
Usage: rocm-fix kernel-params plan|apply|revert [--root DIR] [--dry-run] [--yes] [--json]

plan     the amdgpu parameters the knowledge base supports for the GPUs found
         (KFD topology), each with its evidence level and sources, and the ones
         considered and rejected, with why. Parameters whose evidence is harmful
         or none-found are never applied.
apply    writes them for the boot loader in use: a GRUB drop-in
         (/etc/default/grub.d/90-rocm-fix.cfg), or the kernel command line of
         systemd-boot (/etc/kernel/cmdline) or kernelstub, after a backup; prints
         the command that regenerates the boot configuration and runs it only
         with --yes
revert   restores exactly what was there

Options:
  --root DIR   work on an image or chroot (nothing is regenerated there)
  --dry-run    say what would change, change nothing
  --yes        run the regeneration command after apply/revert
  --json       print JSON
Exit status: 0 done (or nothing to do), 1 written but the regeneration
command failed (run it yourself), 2 bad usage, 3 refused or failed
(nothing was changed).
";

fn usage_error(msg: &str, help: &str) -> i32 {
    eprintln!("rocm-fix: {msg}");
    eprintln!("{}", help.lines().next().unwrap_or(""));
    eprintln!("Try 'rocm-fix --help'.");
    EXIT_USAGE
}

fn to_strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().to_string())
        .collect()
}

/// The program's entry point; returns the exit code.
pub fn main(argv: Vec<OsString>) -> i32 {
    let name = argv
        .first()
        .map(|a| {
            a.to_string_lossy()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let rest = argv.get(1..).unwrap_or(&[]).to_vec();
    if name == "rocm-fix-run" {
        return run_command(&rest);
    }
    let Some(first) = rest.first().map(|a| a.to_string_lossy().to_string()) else {
        eprint!("{HELP}");
        return EXIT_USAGE;
    };
    let tail = rest.get(1..).unwrap_or(&[]);
    match first.as_str() {
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            EXIT_OK
        }
        "-V" | "--version" => {
            println!("{VERSION_TEXT}");
            EXIT_OK
        }
        "run" => run_command(tail),
        "doctor" => doctor_command(&to_strings(tail)),
        "triage" => triage_command(&to_strings(tail)),
        "kb" => kb_command(&to_strings(tail)),
        "preload" => preload_command(&to_strings(tail)),
        "kernel-params" => kparams_command(&to_strings(tail)),
        other => usage_error(&format!("unknown command '{other}'"), HELP),
    }
}

/// Parses `run`'s options; everything from the first non-option (or after
/// `--`) is the command.
pub fn parse_run(args: &[OsString]) -> Result<RunOptions, String> {
    let mut o = RunOptions {
        retries: 3,
        presets: true,
        ..Default::default()
    };
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let s = a.to_string_lossy();
        let value = |i: usize| -> Result<OsString, String> {
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{s} needs a value"))
        };
        match s.as_ref() {
            "--" => {
                i += 1;
                break;
            }
            "--retries" => {
                let v = value(i)?;
                o.retries = v.to_string_lossy().parse().map_err(|_| {
                    format!("--retries takes a number, not '{}'", v.to_string_lossy())
                })?;
                i += 2;
            }
            "--no-retry" => {
                o.retries = 0;
                i += 1;
            }
            "--no-presets" => {
                o.presets = false;
                i += 1;
            }
            "--show" => {
                o.show = true;
                i += 1;
            }
            "--json" => {
                o.json = true;
                i += 1;
            }
            "--allow-cpu-fallback" => {
                o.allow_cpu_fallback = true;
                i += 1;
            }
            "--report" => {
                o.report = Some(value(i)?.into());
                i += 2;
            }
            "--preload" => {
                o.preload = Some(value(i)?.into());
                i += 2;
            }
            "-h" | "--help" => return Err("help".into()),
            _ if s.starts_with('-') => {
                return Err(format!("unknown option '{s}' (put the command after --)"))
            }
            _ => break,
        }
    }
    o.command = args.get(i..).unwrap_or(&[]).to_vec();
    if o.command.is_empty() {
        return Err("no command to run".into());
    }
    Ok(o)
}

fn run_command(args: &[OsString]) -> i32 {
    let opts = match parse_run(args) {
        Ok(o) => o,
        Err(e) if e == "help" => {
            print!("{RUN_HELP}");
            return EXIT_OK;
        }
        Err(e) => return usage_error(&e, RUN_HELP),
    };
    match run::run(&opts) {
        Ok(status) => exit_like(status),
        Err(e) => {
            eprintln!("{e}");
            EXIT_ERROR
        }
    }
}

/// Our exit status is the child's: its code, or its death by the same signal.
fn exit_like(status: std::process::ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    if let Some(sig) = status.signal() {
        // SAFETY: restoring the default action and raising the child's signal
        // on ourselves, so that our parent sees the same death.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            // Core dumps are the child's business: ours would overwrite its core.
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::raise(sig);
        }
        return 128 + sig;
    }
    EXIT_ERROR
}

fn flags(args: &[String], allowed: &[&str]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut f = Vec::new();
    let mut pos = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a.starts_with("--") || a == "-h" {
            if !allowed.contains(&a.as_str()) {
                return Err(format!("unknown option '{a}'"));
            }
            f.push(a.clone());
            if a == "--sysfs" {
                let v = args.get(i + 1).ok_or("--sysfs needs a folder")?;
                pos.insert(0, format!("sysfs={v}"));
                i += 1;
            }
        } else {
            pos.push(a.clone());
        }
        i += 1;
    }
    Ok((f, pos))
}

fn triage_command(args: &[String]) -> i32 {
    let (f, pos) = match flags(args, &["--json", "--help", "-h"]) {
        Ok(x) => x,
        Err(e) => return usage_error(&e, TRIAGE_HELP),
    };
    if f.iter().any(|a| a == "--help" || a == "-h") {
        print!("{TRIAGE_HELP}");
        return EXIT_OK;
    }
    let [input] = pos.as_slice() else {
        return usage_error(
            "triage reads exactly one FILE (or - for stdin)",
            TRIAGE_HELP,
        );
    };
    let mut text = Vec::new();
    let read = if input == "-" {
        std::io::stdin().read_to_end(&mut text).map(|_| ())
    } else {
        std::fs::read(input).map(|t| text = t)
    };
    if let Err(e) = read {
        eprintln!("rocm-fix: cannot read {input}: {e}");
        return EXIT_ERROR;
    }
    let text = String::from_utf8_lossy(&text);
    match crate::triage::triage(&text) {
        Ok(report) => {
            if f.iter().any(|a| a == "--json") {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            let warn = report
                .findings
                .iter()
                .any(|x| !matches!(x.severity, rocm_fix_shared::kb::Severity::Info));
            if warn {
                EXIT_FINDINGS
            } else {
                EXIT_OK
            }
        }
        Err(e) => {
            eprintln!("rocm-fix: {input}: {e}");
            EXIT_USAGE
        }
    }
}

fn kb_command(args: &[String]) -> i32 {
    let (f, pos) = match flags(args, &["--json", "--help", "-h"]) {
        Ok(x) => x,
        Err(e) => return usage_error(&e, KB_HELP),
    };
    let json = f.iter().any(|a| a == "--json");
    if f.iter().any(|a| a == "--help" || a == "-h") {
        print!("{KB_HELP}");
        return EXIT_OK;
    }
    match pos
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] => {
            if json {
                println!("{}", rocm_fix_shared::kb::list_json());
            } else {
                print!("{}", rocm_fix_shared::kb::list_text());
            }
            EXIT_OK
        }
        ["show", id] => match rocm_fix_shared::kb::issue(id) {
            Some(issue) if json => {
                println!("{}", issue.to_json());
                EXIT_OK
            }
            Some(_) => {
                print!("{}", rocm_fix_shared::kb::show_text(id).unwrap_or_default());
                EXIT_OK
            }
            None => {
                eprintln!("rocm-fix: no known issue '{id}' (see 'rocm-fix kb list')");
                EXIT_USAGE
            }
        },
        _ => usage_error("kb takes 'list' or 'show ID'", KB_HELP),
    }
}

fn preload_command(args: &[String]) -> i32 {
    let mut action = None;
    let mut root: Option<std::path::PathBuf> = None;
    let mut library: Option<std::path::PathBuf> = None;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{PRELOAD_HELP}");
                return EXIT_OK;
            }
            "--root" | "--library" => {
                let Some(v) = args.get(i + 1) else {
                    return usage_error(&format!("{a} needs a value"), PRELOAD_HELP);
                };
                if a == "--root" {
                    root = Some(v.into());
                } else {
                    library = Some(v.into());
                }
                i += 1;
            }
            "enable" | "disable" | "status" if action.is_none() => action = Some(a.clone()),
            other => return usage_error(&format!("unexpected argument '{other}'"), PRELOAD_HELP),
        }
        i += 1;
    }
    let Some(action) = action else {
        return usage_error("preload takes enable, disable or status", PRELOAD_HELP);
    };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if action != "status" && root.is_none() && !is_root {
        eprintln!("rocm-fix: editing /etc/ld.so.preload needs root (or --root DIR for an image)");
        return EXIT_ERROR;
    }
    let paths = crate::preload::Paths::new(root.as_deref().unwrap_or(std::path::Path::new("/")));
    let result = match action.as_str() {
        "enable" => {
            let lib = match (library, &root) {
                (Some(l), _) => Ok(l),
                (None, Some(_)) => Ok("/usr/lib/x86_64-linux-gnu/librocm_fix.so".into()),
                (None, None) => run::find_preload(None),
            };
            lib.and_then(|l| crate::preload::enable(&paths, &l))
        }
        "disable" => crate::preload::disable(&paths),
        _ => {
            let (text, ok) = crate::preload::status(&paths);
            print!("{text}");
            return if ok { EXIT_OK } else { EXIT_FINDINGS };
        }
    };
    match result {
        Ok(crate::preload::Outcome::Changed(m)) | Ok(crate::preload::Outcome::Unchanged(m)) => {
            println!("rocm-fix: {m}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("rocm-fix: {e}; nothing was changed");
            EXIT_ERROR
        }
    }
}

fn kparams_command(args: &[String]) -> i32 {
    let mut action = None;
    let mut root = std::path::PathBuf::from("/");
    let (mut dry, mut yes, mut json) = (false, false, false);
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{KPARAMS_HELP}");
                return EXIT_OK;
            }
            "--root" => {
                let Some(v) = args.get(i + 1) else {
                    return usage_error("--root needs a folder", KPARAMS_HELP);
                };
                root = v.into();
                i += 1;
            }
            "--dry-run" => dry = true,
            "--yes" => yes = true,
            "--json" => json = true,
            "plan" | "apply" | "revert" if action.is_none() => action = Some(a.clone()),
            other => return usage_error(&format!("unexpected argument '{other}'"), KPARAMS_HELP),
        }
        i += 1;
    }
    let Some(action) = action else {
        return usage_error("kernel-params takes plan, apply or revert", KPARAMS_HELP);
    };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if action != "plan" && !dry && root == std::path::Path::new("/") && !is_root {
        eprintln!(
            "rocm-fix: changing the boot configuration needs root (or --dry-run, or --root DIR)"
        );
        return EXIT_ERROR;
    }
    let env = |k: &str| std::env::var(k).ok();
    let (chips, _) = run::machine_chips(&env);
    let plan = crate::kernel_params::plan(&root, &chips);
    let change = match action.as_str() {
        "plan" => {
            if json {
                println!("{}", plan.to_json());
            } else {
                print!("{}", plan.to_text());
            }
            return EXIT_OK;
        }
        "apply" => crate::kernel_params::apply(&root, &plan, dry),
        _ => crate::kernel_params::revert(&root, dry),
    };
    match change {
        Ok(change) => {
            if json {
                println!("{}", change.to_json());
            } else {
                print!("{}", change.to_text());
            }
            if yes && !dry && !change.regenerate.is_empty() {
                if root != std::path::Path::new("/") {
                    println!(
                        "rocm-fix: not regenerating the boot configuration of an image (--root)"
                    );
                } else if let Err(e) = crate::kernel_params::run_regeneration(&root, &change) {
                    // The files are written: say so, and let the user regenerate.
                    eprintln!("rocm-fix: the change is written, but regenerating failed: {e}");
                    return EXIT_FINDINGS;
                }
            }
            EXIT_OK
        }
        Err(e) if e.to_lowercase().contains("nothing was changed") => {
            eprintln!("rocm-fix: {e}");
            EXIT_ERROR
        }
        Err(e) => {
            eprintln!("rocm-fix: {e}; nothing was changed");
            EXIT_ERROR
        }
    }
}

fn doctor_command(args: &[String]) -> i32 {
    let (f, pos) = match flags(args, &["--json", "--sysfs", "--help", "-h"]) {
        Ok(x) => x,
        Err(e) => return usage_error(&e, DOCTOR_HELP),
    };
    if f.iter().any(|a| a == "--help" || a == "-h") {
        print!("{DOCTOR_HELP}");
        return EXIT_OK;
    }
    let mut sysfs = None;
    for p in &pos {
        match p.strip_prefix("sysfs=") {
            Some(d) => sysfs = Some(std::path::PathBuf::from(d)),
            None => return usage_error(&format!("unexpected argument '{p}'"), DOCTOR_HELP),
        }
    }
    doctor_run(sysfs, f.iter().any(|a| a == "--json"))
}

fn doctor_run(sysfs: Option<std::path::PathBuf>, json: bool) -> i32 {
    let mut opts = crate::doctor::Options::from_system();
    if let Some(dir) = sysfs {
        if !dir.is_dir() {
            eprintln!("rocm-fix: --sysfs {}: not a folder", dir.display());
            return EXIT_USAGE;
        }
        opts.sysfs = Some(dir);
    }
    let report = crate::doctor::diagnose(&opts);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.has_problems() {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn run_options_stop_at_the_command() {
        let o = parse_run(&os(&["--retries", "5", "yolo", "train", "--epochs", "3"])).unwrap();
        assert_eq!((o.retries, o.presets), (5, true));
        assert_eq!(o.command, os(&["yolo", "train", "--epochs", "3"]));
        let o = parse_run(&os(&["--no-retry", "--no-presets", "--", "--weird-name"])).unwrap();
        assert_eq!((o.retries, o.presets), (0, false));
        assert_eq!(o.command, os(&["--weird-name"]));
    }

    #[test]
    fn run_usage_errors_are_clear() {
        assert_eq!(
            parse_run(&os(&["--retries"])).unwrap_err(),
            "--retries needs a value"
        );
        assert!(parse_run(&os(&["--retries", "x", "a"]))
            .unwrap_err()
            .contains("takes a number"));
        assert!(parse_run(&os(&["--frobnicate", "a"]))
            .unwrap_err()
            .contains("unknown option"));
        assert_eq!(
            parse_run(&os(&["--show"])).unwrap_err(),
            "no command to run"
        );
    }
}
