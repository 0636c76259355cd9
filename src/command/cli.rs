//! Arguments, help and dispatch of the `rocm-fix` command (and of
//! `rocm-fix-run`, the same program under a second name), declared once with
//! clap's derive: the same definitions make `--help`, `help SUBCOMMAND`, the
//! shell completions and the man pages (`rocm-fix generate`, hidden; run by
//! scripts/install and scripts/package).

use crate::run::{self, RunOptions};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

pub use crate::exit::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (run: the command's own status is passed through)
  1  doctor/triage found problems worth acting on
  2  bad usage, or input that is not rocminfo / KFD properties / a kernel log
  3  an error on rocm-fix's side (cannot read or write a file, no librocm_fix.so)";

/// Every subcommand's help opens with its usage line, as before clap.
const SUB_TEMPLATE: &str =
    "{usage-heading} {usage}\n\n{about-with-newline}\n{all-args}{after-help}";

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "rocm-fix",
    version,
    about = "rocm-fix: keep ROCm workloads on AMD RDNA1/RDNA2 GPUs alive through\n\"Memory access fault ... Page not present\" crashes.",
    arg_required_else_help = true,
    after_help = EXIT_CODES,
    help_template = "{about-with-newline}\n{usage-heading} {usage}\n\n{all-args}\n\nRun 'rocm-fix help COMMAND' (or 'rocm-fix COMMAND --help') for a command's options.\n{after-help}"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start COMMAND with librocm_fix.so preloaded; retry it after a GPU fault
    #[command(help_template = SUB_TEMPLATE, long_about = RUN_ABOUT)]
    Run(RunArgs),
    /// The real GPUs, driver, ROCm, risky settings and the known issues that match
    #[command(help_template = SUB_TEMPLATE, long_about = DOCTOR_ABOUT,
              after_help = "Exit status: 0 nothing to act on, 1 problems found.")]
    Doctor(DoctorArgs),
    /// The real chip of every agent in a pasted rocminfo or KFD properties
    #[command(help_template = SUB_TEMPLATE, long_about = TRIAGE_ABOUT,
              after_help = "Exit status: 0 no warnings, 1 warnings found, 2 input that is neither.")]
    Triage(TriageArgs),
    /// Write a crash bundle (Markdown + JSON) to attach to a bug report
    #[command(help_template = SUB_TEMPLATE, long_about = REPORT_ABOUT,
              after_help = "Exit status: 0 written (what could not be read is listed), 2 bad usage,\n3 the files could not be written.")]
    Report(ReportArgs),
    /// The known-issues knowledge base
    #[command(help_template = SUB_TEMPLATE, long_about = KB_ABOUT)]
    Kb(KbArgs),
    /// Add librocm_fix.so to /etc/ld.so.preload, remove it, or show it
    #[command(help_template = SUB_TEMPLATE, long_about = PRELOAD_ABOUT,
              after_help = "Exit status: 0 done (or nothing to do), 1 status: not enabled or broken,\n2 bad usage, 3 refused or failed (nothing was changed).")]
    Preload(PreloadArgs),
    /// amdgpu kernel parameters worth setting here: plan, apply, revert
    #[command(name = "kernel-params", help_template = SUB_TEMPLATE, long_about = KPARAMS_ABOUT,
              after_help = "Exit status: 0 done (or nothing to do), 1 written but the regeneration\ncommand failed (run it yourself), 2 bad usage, 3 refused or failed\n(nothing was changed).")]
    KernelParams(KernelParamsArgs),
    /// Probe this GPU with and without rocm-fix; write a report to share
    #[command(help_template = SUB_TEMPLATE, long_about = VALIDATE_ABOUT,
              after_help = "Exit status: 0 report written (or nothing run when declined), 2 bad usage\n(or no --yes without a terminal), 3 cannot find librocm_fix.so or the probe\nkernels, or cannot write the report.")]
    Validate(ValidateArgs),
    /// Write shell completions or man pages (scripts/install, scripts/package)
    #[command(hide = true, help_template = SUB_TEMPLATE)]
    Generate(GenerateArgs),
}

const RUN_ABOUT: &str = "\
Starts COMMAND with librocm_fix.so prepended to LD_PRELOAD (what was there is
kept), a fault journal of its own, and the presets that match it (ultralytics,
python with torch, ComfyUI, AUTOMATIC1111, ollama/llama.cpp; settings you set
yourself win). Its stdin, stdout and stderr are its own; signals reach it; its
exit status is ours. If it dies of a GPU memory fault it is run again with the
next rung of the ladder: larger padding, MIOpen solver restrictions, PyTorch
caching off, removal of a harmful HSA_OVERRIDE_GFX_VERSION, and with
--allow-cpu-fallback the CPU. Any other failure is never retried.";

const DOCTOR_ABOUT: &str = "\
What to paste into a bug report, and what to do: every GPU with its real chip
(from the KFD topology) and what the runtime reports, whether an override is in
effect and whether it is harmful for that chip, kernel version, amdgpu module
parameters, ROCm version, firmware versions where readable, risky environment
variables, whether librocm_fix.so is in /etc/ld.so.preload, and the known issues
that match, each with its mitigation, evidence level and sources.";

const TRIAGE_ABOUT: &str = "\
Reads a pasted `rocminfo` output (old and new formats, several agents,
truncated pastes) or a KFD `properties` file, and finds the real chip of every
GPU agent even when HSA_OVERRIDE_GFX_VERSION rewrote the names: from the Chip
ID (PCI device id), gfx_target_version, SIMDs per CU. A pasted kernel log
(`sudo dmesg`, `journalctl -k`) has its amdgpu page-fault reports decoded:
hub, vmid, pasid, process, page, the L2 protection fault status and its
fields, the UTCL2 client and what it usually means. '-' reads stdin.";

const REPORT_ABOUT: &str = "\
Collects, for the last run of rocm-fix-run (or --run DIR), into
rocm-fix-report.md and rocm-fix-report.json: doctor's findings, the run report
and fault journal, the kernel log's amdgpu lines (dmesg, else journalctl -k, or
--kernel-log FILE|-) with every GPU page-fault report decoded and matched to
the journal by address, ROCr's fault line, versions and the environment
variables that matter. Home folders, the user and host names are redacted
unless --no-redact. Says what it could not read, and why.";

const KB_ABOUT: &str = "\
The known issues behind \"Page not present\" faults: symptoms, chips, cause,
mitigations with their evidence level (confirmed, helped, mixed, anecdotal,
harmful, none-found) and sources.";

const PRELOAD_ABOUT: &str = "\
enable   validates the library (it exists, is an x86_64 ELF, and a test process
         runs cleanly with it preloaded), then adds it to ROOT/etc/ld.so.preload:
         atomically (temp file, fsync, rename), after a backup
         (ld.so.preload.rocm-fix.bak), keeping every other line and comment;
         running it twice changes nothing
disable  removes only rocm-fix's line: the file is back byte for byte as it was
         before enable (and removed if enable created it)
status   what the file lists and whether rocm-fix's library loads";

const KPARAMS_ABOUT: &str = "\
plan     the amdgpu parameters the knowledge base supports for the GPUs found
         (KFD topology), each with its evidence level and sources, and the ones
         considered and rejected, with why. Parameters whose evidence is harmful
         or none-found are never applied.
apply    writes them for the boot loader in use: a GRUB drop-in
         (/etc/default/grub.d/90-rocm-fix.cfg), or the kernel command line of
         systemd-boot (/etc/kernel/cmdline) or kernelstub, after a backup; prints
         the command that regenerates the boot configuration and runs it only
         with --yes
revert   restores exactly what was there";

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Retry at most N times ('all': every rung of the ladder)
    #[arg(long, value_name = "N|all", default_value = "3", value_parser = retries)]
    pub retries: u32,
    /// Never retry
    #[arg(long)]
    pub no_retry: bool,
    /// Apply no preset
    #[arg(long)]
    pub no_presets: bool,
    /// Print what would be set and exit (with --json: as JSON)
    #[arg(long)]
    pub show: bool,
    /// With --show: print JSON
    #[arg(long)]
    pub json: bool,
    /// Allow the last rung: hide the GPUs so frameworks use the CPU
    #[arg(long)]
    pub allow_cpu_fallback: bool,
    /// Write the run report (JSON) here (default: the run folder)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The librocm_fix.so to use (default: next to this program)
    #[arg(long, value_name = "PATH")]
    pub preload: Option<PathBuf>,
    /// After a retry that worked, write what changed to your configuration
    /// file (~/.config/rocm-fix/rocm-fix.conf; the old one kept as .bak)
    #[arg(long)]
    pub keep: bool,
    /// Run with AMD_LOG_LEVEL=N, the runtime's log written to files of the
    /// run folder (AMD_LOG_LEVEL_FILE), not the terminal
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=7))]
    pub log_level: Option<u32>,
    /// The command and its arguments (everything from the first word that is
    /// not an option of ours, or after --)
    #[arg(value_name = "COMMAND", trailing_var_arg = true, value_hint = clap::ValueHint::CommandWithArguments)]
    pub command: Vec<OsString>,
}

fn retries(s: &str) -> Result<u32, String> {
    if s == "all" {
        return Ok(run::ALL_RETRIES);
    }
    s.parse()
        .ok()
        .filter(|&n| n != run::ALL_RETRIES)
        .ok_or_else(|| format!("--retries takes a number or 'all', not '{s}'"))
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Read a captured sysfs tree (DIR/class/kfd/kfd/topology) instead of /sys
    #[arg(long, value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Where this Python's libamdhip64 comes from, and whether its torch
    /// carries code for the real chips
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Whether this HIP binary (.so, executable) carries code for the real
    /// chips (repeatable)
    #[arg(long, value_name = "FILE")]
    pub binary: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TriageArgs {
    /// A rocminfo output, KFD properties file or kernel log ('-': stdin)
    #[arg(value_name = "FILE|-")]
    pub input: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder to report on (default: the newest of ~/.local/state/rocm-fix/runs)
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Read the kernel log from FILE ('-': stdin) instead of dmesg/journalctl
    #[arg(long, value_name = "FILE|-")]
    pub kernel_log: Option<String>,
    /// Keep home folders, user and host names
    #[arg(long)]
    pub no_redact: bool,
    /// Write the two files into DIR (default: the current folder)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct KbArgs {
    #[command(subcommand)]
    pub action: Option<KbAction>,
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KbAction {
    /// Every known issue, one a line
    List,
    /// One issue in full
    Show {
        /// The issue's id (see 'rocm-fix kb list')
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PreloadArgs {
    #[arg(value_enum)]
    pub action: Option<PreloadAction>,
    /// Edit DIR/etc/ld.so.preload (a chroot or image); without it, enable and
    /// disable need root
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The library as seen inside the root (default:
    /// /usr/lib/x86_64-linux-gnu/librocm_fix.so with --root, else the one next
    /// to this program)
    #[arg(long, value_name = "PATH")]
    pub library: Option<PathBuf>,
    /// disable: also remove librocm_fix.so entries that enable did not add
    /// (a hand-made line, another install), saying which
    #[arg(long)]
    pub force: bool,
    /// status: print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreloadAction {
    Enable,
    Disable,
    Status,
}

impl PreloadAction {
    fn as_str(self) -> &'static str {
        match self {
            PreloadAction::Enable => "enable",
            PreloadAction::Disable => "disable",
            PreloadAction::Status => "status",
        }
    }
}

#[derive(Args, Debug)]
pub struct KernelParamsArgs {
    #[arg(value_enum)]
    pub action: Option<KernelParamsAction>,
    /// Work on an image or chroot (nothing is regenerated there)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Say what would change, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run the regeneration command after apply/revert
    #[arg(long)]
    pub yes: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelParamsAction {
    Plan,
    Apply,
    Revert,
}

impl KernelParamsAction {
    fn as_str(self) -> &'static str {
        match self {
            KernelParamsAction::Plan => "plan",
            KernelParamsAction::Apply => "apply",
            KernelParamsAction::Revert => "revert",
        }
    }
}

const VALIDATE_ABOUT: &str = "\
Evidence for rocm-fix's claims from your card. Runs a fixed set of probe kernels
(built into probes/probes.co for gfx1010-1012, gfx1030-1036, gfx1100-1103 and
loaded with hipModuleLoadData into the HIP runtime you have), each in its own
child process with a timeout, once without and once with librocm_fix.so:
reads past the end of buffers that end at a 2 MiB block end and inside a block;
kernels on coherent host memory, fine-grained and uncached VRAM, managed
memory; a host polling a flag a kernel sets. With --with-overrides, the same
under the HSA_OVERRIDE_GFX_VERSION values users try on this card. Some probes
are meant to fault: the GPU may reset and the screen flicker; it asks first
unless --yes. Writes DIR/report.json and DIR/report.md (redacted as `rocm-fix
report` redacts) and nothing else.";

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Do not ask before running the probes
    #[arg(long)]
    pub yes: bool,
    /// The folder for report.json and report.md
    #[arg(long, value_name = "DIR", default_value = "rocm-fix-validate")]
    pub report: PathBuf,
    /// Print report.json instead of the Markdown summary
    #[arg(long)]
    pub json: bool,
    /// Also run the probes under the HSA_OVERRIDE_GFX_VERSION values users try
    #[arg(long)]
    pub with_overrides: bool,
    /// Run one probe in this process (the child of validate)
    #[arg(long, value_name = "NAME", hide = true)]
    pub probe: Option<String>,
}

fn validate_command(a: ValidateArgs) -> i32 {
    if let Some(p) = &a.probe {
        return crate::validate::child(p);
    }
    let timeout = std::env::var("ROCM_FIX_VALIDATE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    crate::validate::validate(&crate::validate::Options {
        yes: a.yes,
        report_dir: a.report,
        json: a.json,
        with_overrides: a.with_overrides,
        timeout: std::time::Duration::from_secs(timeout),
    })
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(value_enum)]
    pub what: Generated,
    /// The folder to write into
    pub dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generated {
    /// rocm-fix.bash, _rocm-fix (zsh), rocm-fix.fish
    Completions,
    /// rocm-fix.1 and rocm-fix-SUBCOMMAND.1
    Man,
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("rocm-fix: {msg}");
    eprintln!("Try 'rocm-fix --help'.");
    EXIT_USAGE
}

/// A clap error as the one line rocm-fix has always printed (the tests and
/// scripts read these), or clap's own text for the rarer kinds.
fn usage_message(e: &clap::Error) -> String {
    let ctx = |k: ContextKind| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // "--retries <N>" -> "--retries"
    let arg = ctx(ContextKind::InvalidArg)
        .map(|a| a.split([' ', '=']).next().unwrap_or_default().to_string());
    match (e.kind(), arg) {
        (ErrorKind::InvalidSubcommand, _) => format!(
            "unknown command '{}'",
            ctx(ContextKind::InvalidSubcommand).unwrap_or_default()
        ),
        (ErrorKind::UnknownArgument, Some(a)) => {
            let usage = match e.get(ContextKind::Usage) {
                Some(ContextValue::StyledStr(u)) => u.to_string(),
                _ => String::new(),
            };
            if usage.contains("rocm-fix run") {
                format!("unknown option '{a}' (put the command after --)")
            } else {
                format!("unknown option '{a}'")
            }
        }
        (ErrorKind::InvalidValue, Some(a))
            if ctx(ContextKind::InvalidValue).is_some_and(|v| v.is_empty()) =>
        {
            format!("{a} needs a value")
        }
        (ErrorKind::ValueValidation, _) => match std::error::Error::source(e) {
            Some(source) => source.to_string(),
            None => e.to_string(),
        },
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    }
}

/// The program's entry point; returns the exit code.
pub fn main(argv: Vec<OsString>) -> i32 {
    let name = argv
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
        })
        .unwrap_or_default();
    let mut args: Vec<OsString> = vec!["rocm-fix".into()];
    if name == "rocm-fix-run" {
        // `rocm-fix-run --version` (alone) is ours, as with any program;
        // otherwise rocm-fix-run ARGS… is rocm-fix run ARGS….
        if argv.len() == 2 && (argv[1] == "--version" || argv[1] == "-V") {
            println!("rocm-fix-run {}", crate::VERSION);
            return EXIT_OK;
        }
        args.push("run".into());
    }
    args.extend(argv.into_iter().skip(1));
    let cli = match Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    match cli.command {
        Command::Run(a) => run_command(a),
        Command::Doctor(a) => doctor_command(a),
        Command::Triage(a) => triage_command(a),
        Command::Report(a) => report_command(a),
        Command::Kb(a) => kb_command(a),
        Command::Preload(a) => preload_command(a),
        Command::KernelParams(a) => kparams_command(a),
        Command::Validate(a) => validate_command(a),
        Command::Generate(a) => generate(a),
    }
}

/// Help and version go to stdout with status 0; a bare `rocm-fix` prints the
/// help on stderr; every usage error exits 2 (clap's own default is 2 too,
/// but the message is ours).
fn clap_exit(e: &clap::Error) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            EXIT_OK
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            EXIT_USAGE
        }
        _ => usage_error(&usage_message(e)),
    }
}

/// Parses `run`'s options; everything from the first non-option (or after
/// `--`) is the command.
pub fn parse_run(args: &[OsString]) -> Result<RunOptions, String> {
    let argv = ["rocm-fix".into(), "run".into()]
        .into_iter()
        .chain(args.iter().cloned());
    let cli = Cli::command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp => "help".to_string(),
            _ => usage_message(&e),
        })?;
    match cli.command {
        Command::Run(a) => run_options(a),
        _ => Err("not a run command".into()),
    }
}

fn run_options(a: RunArgs) -> Result<RunOptions, String> {
    if a.command.is_empty() {
        return Err("no command to run".into());
    }
    Ok(RunOptions {
        command: a.command,
        retries: if a.no_retry { 0 } else { a.retries },
        presets: !a.no_presets,
        show: a.show,
        json: a.json,
        allow_cpu_fallback: a.allow_cpu_fallback,
        report: a.report,
        preload: a.preload,
        keep: a.keep,
        log_level: a.log_level,
    })
}

fn run_command(a: RunArgs) -> i32 {
    let opts = match run_options(a) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    match run::run(&opts) {
        Ok(status) => exit_like(status),
        // A --preload that is not a usable library is bad input.
        Err(run::RunError::Usage(e)) => {
            eprintln!("{e}");
            EXIT_USAGE
        }
        Err(run::RunError::Failed(e)) => {
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

fn triage_command(a: TriageArgs) -> i32 {
    let [input] = a.input.as_slice() else {
        return usage_error("triage reads exactly one FILE (or - for stdin)");
    };
    // A rocminfo paste is tens of KiB; a bound keeps /dev/zero or a runaway
    // pipe from eating the machine's memory.
    const MAX_INPUT: u64 = 16 << 20;
    let read = if input == "-" {
        crate::input::read_capped(&mut std::io::stdin().lock(), MAX_INPUT)
    } else {
        crate::input::read_regular(std::path::Path::new(input), MAX_INPUT)
    };
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            let usage = matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
            eprintln!(
                "rocm-fix: cannot read {}: {}",
                crate::input::shown(input),
                crate::input::shown(&e.to_string())
            );
            return if usage { EXIT_USAGE } else { EXIT_ERROR };
        }
    };
    let text = String::from_utf8_lossy(&text);
    match crate::triage::triage(&text) {
        Ok(report) => {
            if a.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            // A GPU page fault in the pasted kernel log is a problem too.
            let warn = !report.kernel_faults.is_empty()
                || report
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

fn report_command(a: ReportArgs) -> i32 {
    if let Some(dir) = &a.run {
        if !dir.is_dir() {
            return usage_error(&format!("--run {}: not a folder", dir.display()));
        }
    }
    let opts = crate::report::Options {
        run: a.run,
        kernel_log: a.kernel_log,
        redact: !a.no_redact,
        out_dir: a.out,
    };
    match crate::report::write(&opts) {
        Ok((md, json, not_read)) => {
            println!("rocm-fix: wrote {} and {}", md.display(), json.display());
            for m in not_read {
                println!("  not read: {m}");
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("rocm-fix: {e}");
            EXIT_ERROR
        }
    }
}

fn kb_command(a: KbArgs) -> i32 {
    match a.action {
        Some(KbAction::List) => {
            if a.json {
                println!("{}", crate::kb::list_json());
            } else {
                print!("{}", crate::kb::list_text());
            }
            EXIT_OK
        }
        Some(KbAction::Show { id }) => match rocm_fix_shared::kb::issue(&id) {
            Some(issue) if a.json => {
                println!("{}", crate::kb::issue_json(&issue));
                EXIT_OK
            }
            Some(_) => {
                print!("{}", crate::kb::show_text(&id).unwrap_or_default());
                EXIT_OK
            }
            None => {
                eprintln!("rocm-fix: no known issue '{id}' (see 'rocm-fix kb list')");
                EXIT_USAGE
            }
        },
        None => usage_error("kb takes 'list' or 'show ID'"),
    }
}

fn preload_command(a: PreloadArgs) -> i32 {
    let PreloadArgs {
        action,
        root,
        library,
        force,
        json,
    } = a;
    let Some(action) = action else {
        return usage_error("preload takes enable, disable or status");
    };
    let action = action.as_str();
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if action != "status" && root.is_none() && !is_root {
        eprintln!("rocm-fix: editing /etc/ld.so.preload needs root (or --root DIR for an image)");
        return EXIT_ERROR;
    }
    let paths = crate::preload::Paths::new(root.as_deref().unwrap_or(std::path::Path::new("/")));
    let result = match action {
        "enable" => {
            let lib = match (library, &root) {
                (Some(l), _) => Ok(l),
                (None, Some(_)) => Ok("/usr/lib/x86_64-linux-gnu/librocm_fix.so".into()),
                (None, None) => run::find_preload(None),
            };
            lib.and_then(|l| crate::preload::enable(&paths, &l))
        }
        "disable" => crate::preload::disable(&paths, force),
        _ => {
            // A preload list that is not a regular file is input the command
            // does not read (exit 2), not a finding.
            if let Err(e) = crate::preload::read_optional(&paths.preload) {
                if e.contains(crate::input::NOT_REGULAR) {
                    eprintln!("rocm-fix: {e}");
                    return EXIT_USAGE;
                }
            }
            let (text, ok) = if json {
                crate::preload::status_json(&paths)
            } else {
                crate::preload::status(&paths)
            };
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

fn kparams_command(a: KernelParamsArgs) -> i32 {
    let KernelParamsArgs {
        action,
        root,
        dry_run: dry,
        yes,
        json,
    } = a;
    let Some(action) = action else {
        return usage_error("kernel-params takes plan, apply or revert");
    };
    let action = action.as_str();
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
    let change = match action {
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
            if e.contains(crate::input::NOT_REGULAR) {
                EXIT_USAGE
            } else {
                EXIT_ERROR
            }
        }
        Err(e) => {
            eprintln!("rocm-fix: {e}; nothing was changed");
            EXIT_ERROR
        }
    }
}

fn doctor_command(
    DoctorArgs {
        sysfs,
        json,
        python,
        binary,
    }: DoctorArgs,
) -> i32 {
    let mut opts = crate::doctor::Options::from_system();
    for b in &binary {
        if !b.is_file() {
            eprintln!("rocm-fix: --binary {}: not a file", b.display());
            return EXIT_USAGE;
        }
    }
    if let Some(p) = &python {
        if !p.is_file() {
            eprintln!("rocm-fix: --python {}: not a file", p.display());
            return EXIT_USAGE;
        }
    }
    opts.python = python;
    opts.binaries = binary;
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

/// `rocm-fix generate completions|man DIR`: the files scripts/install and
/// scripts/package ship, from the definitions above.
fn generate(a: GenerateArgs) -> i32 {
    let result = std::fs::create_dir_all(&a.dir).and_then(|_| match a.what {
        Generated::Completions => {
            use clap_complete::Shell;
            [Shell::Bash, Shell::Zsh, Shell::Fish]
                .into_iter()
                .try_for_each(|shell| {
                    clap_complete::generate_to(shell, &mut Cli::command(), "rocm-fix", &a.dir)
                        .map(drop)
                })
        }
        Generated::Man => clap_mangen::generate_to(Cli::command(), &a.dir),
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("rocm-fix: cannot write into {}: {e}", a.dir.display());
            EXIT_ERROR
        }
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
