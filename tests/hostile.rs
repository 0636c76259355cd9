//! Hostile files, paths and environments around librocm_fix.so (issue 13):
//! nothing hangs, nothing loads from the wrong place, every message of ours
//! is prefixed, escaped and bounded. Cases that need a hostile
//! /etc/rocm-fix.conf run in a private mount namespace with an overlay over
//! /etc (`unshare -m`), so the machine's own /etc is never touched.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The stats program on the simulated gfx1010 with the preload.
fn stats_cmd(preload: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut c = sim_command(&program("stats"), "gfx1010");
    c.env("LD_PRELOAD", preload)
        .envs(env.iter().copied())
        .args(args);
    c
}

/// Lines of stderr that rocm-fix printed (or that look like env_logger's);
/// the statistics line of an active rocm-fix as `STATS` (its numbers are
/// the padding's business, not this file's).
fn our_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("rocm-fix") || l.contains("ROCM_FIX") || l.starts_with("warning"))
        .map(|l| {
            if l.starts_with("rocm-fix: intercepted ") {
                STATS
            } else {
                l
            }
        })
        .collect()
}

const STATS: &str = "STATS";

#[test]
fn the_engine_comes_from_the_folder_the_front_was_loaded_from() {
    let built = preload().parent().unwrap().to_path_buf();
    let home = tmpdir("hostile-home");
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(built.join(f), home.join(f)).unwrap();
    }
    // A folder the program moves into before its first HIP call, with an
    // engine planted in it.
    let elsewhere = tmpdir("hostile-elsewhere");
    let planted = program_with("tests/programs/planted_engine.c", &["-shared"]);
    std::fs::copy(&planted, elsewhere.join("librocm_fix_engine.so")).unwrap();
    let cd = format!("cd:{}", elsewhere.display());
    let mut c = stats_cmd(Path::new("./librocm_fix.so"), &[], &[&cd, "seg"]);
    c.current_dir(&home);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!killed, "{run:#?}");
    assert!(
        !run.stderr.contains("PLANTED ENGINE LOADED"),
        "the engine in the new current directory was loaded: {run:#?}"
    );
    assert!(
        run.stdout.contains(" padded=1 "),
        "the real engine, from the front's folder, counted the call: {run:#?}"
    );

    // Without an engine beside it: said once, at the first HIP call, and
    // everything still forwarded.
    let lonely = tmpdir("hostile-lonely");
    std::fs::copy(built.join("librocm_fix.so"), lonely.join("librocm_fix.so")).unwrap();
    let c = stats_cmd(&lonely.join("librocm_fix.so"), &[], &["dev", "host", "dev"]);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!killed && run.code == Some(0), "{run:#?}");
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("cannot load librocm_fix_engine.so"))
        .collect();
    assert_eq!(said.len(), 1, "said exactly once: {run:#?}");
    assert!(said[0].starts_with("rocm-fix: "), "{run:#?}");
    assert!(
        run.stdout.contains("r=0 intercepted=0 "),
        "forwarded, untouched: {run:#?}"
    );
    // A process that never calls HIP says nothing.
    let mut c = clean_command(Path::new("/bin/true"));
    c.env("LD_PRELOAD", lonely.join("librocm_fix.so"));
    let (run, _) = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:#?}");
}

/// Runs `prog args` with the simulated gfx1010 and the preload in a private
/// mount namespace where /etc is an overlay and `setup` (shell) has made
/// /etc/rocm-fix.conf what the test needs.
fn with_hostile_etc(setup: &str, env: &[(&str, &str)], args: &[&str]) -> (Run, bool) {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { geteuid() },
        0,
        "tests/hostile.rs needs root (a mount namespace)"
    );
    // Tests run in parallel: each namespace gets a scratch folder of its own.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = tmpdir(&format!("hostile-etc-{n}"));
    std::fs::create_dir_all(scratch.join("upper")).unwrap();
    std::fs::create_dir_all(scratch.join("work")).unwrap();
    let script = format!(
        "set -e; mount -t overlay overlay -o lowerdir=/etc,upperdir='{s}/upper',workdir='{s}/work' /etc; \
         rm -f /etc/rocm-fix.conf; {setup}; exec \"$@\"",
        s = scratch.display()
    );
    let mut c = sim_command(Path::new("unshare"), "gfx1010");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(program("stats"))
        .args(args)
        .env("LD_PRELOAD", preload())
        .env("ROCM_FIX_STATS", "1")
        .envs(env.iter().copied());
    run_with_timeout(c, Duration::from_secs(30))
}

extern "C" {
    fn geteuid() -> u32;
}

#[test]
fn a_config_file_that_is_not_a_regular_file_gives_one_warning_and_the_defaults() {
    for (setup, why) in [
        ("mkfifo /etc/rocm-fix.conf", "is not a regular file"),
        (
            "ln -s /dev/zero /etc/rocm-fix.conf",
            "is not a regular file",
        ),
        (
            "head -c 100000 /dev/zero | tr '\\0' '#' > /etc/rocm-fix.conf",
            "is larger than 65536 bytes",
        ),
    ] {
        let (run, killed) = with_hostile_etc(setup, &[], &["dev"]);
        assert!(!killed, "{setup}: hung: {run:#?}");
        assert_eq!(run.code, Some(0), "{setup}: {run:#?}");
        assert_eq!(
            our_lines(&run.stderr),
            [
                format!("rocm-fix: /etc/rocm-fix.conf {why}; using the defaults").as_str(),
                STATS
            ],
            "{setup}: {run:#?}"
        );
    }
    // A regular file (here through a symbolic link) is read.
    let (run, killed) = with_hostile_etc(
        "printf 'mode = off\\n' > /etc/real.conf; ln -s /etc/real.conf /etc/rocm-fix.conf",
        &[],
        &["dev"],
    );
    assert!(!killed, "{run:#?}");
    assert_eq!(
        our_lines(&run.stderr),
        ["rocm-fix: passthrough (mode off, no GPU it applies to): nothing was changed"],
        "{run:#?}"
    );
}

#[test]
fn settings_that_are_not_utf8_are_warned_about_not_silently_dropped() {
    // A Latin-1 letter in a comment: the file still applies.
    let (run, killed) = with_hostile_etc(
        "printf '# r\\351glages du syst\\350me\\nmode = off\\n' > /etc/rocm-fix.conf",
        &[],
        &["dev"],
    );
    assert!(!killed, "{run:#?}");
    assert_eq!(
        our_lines(&run.stderr),
        ["rocm-fix: passthrough (mode off, no GPU it applies to): nothing was changed"],
        "{run:#?}"
    );
    // A Latin-1 byte in a value: that line alone is ignored, with a warning.
    let (run, _) = with_hostile_etc(
        "printf 'mode = off\\npadding = 4K\\351\\n' > /etc/rocm-fix.conf",
        &[],
        &["dev"],
    );
    assert_eq!(
        our_lines(&run.stderr),
        [
            "rocm-fix: /etc/rocm-fix.conf line 2: 'padding = 4K\\xe9' is not UTF-8 text; ignored",
            "rocm-fix: passthrough (mode off, no GPU it applies to): nothing was changed"
        ],
        "{run:#?}"
    );
    // ROCM_FIX_MODE=$'off\xff': one warning, and the mode stays auto.
    use std::os::unix::ffi::OsStrExt;
    let mut c = stats_cmd(&preload(), &[("ROCM_FIX_STATS", "1")], &["dev"]);
    c.env("ROCM_FIX_MODE", std::ffi::OsStr::from_bytes(b"off\xff"));
    let (run, _) = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(
        our_lines(&run.stderr),
        [
            "rocm-fix: ROCM_FIX_MODE=off\\xff is not UTF-8 text; ignored",
            STATS
        ],
        "{run:#?}"
    );
}

#[test]
fn a_fifo_journal_never_turns_a_fault_into_a_hang() {
    let dir = tmpdir("hostile-journal");
    let fifo = dir.join("journal.fifo");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    let mut c = sim_command(&program("simwork"), "gfx1010");
    c.env("LD_PRELOAD", preload())
        .env("ROCM_FIX_JOURNAL", &fifo)
        .args(["malloc:0x200000", "read:0:0:0x400001"]);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(30));
    assert!(!killed, "the fault path blocked on the FIFO: {run:#?}");
    assert_rocr_page_fault(&run, 1);
    assert!(
        run.stderr.contains(&format!(
            "rocm-fix: cannot append to the fault journal {}: not a regular file; not written",
            fifo.display()
        )),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("rocm-fix: the GPU faulted at"),
        "{run:#?}"
    );
}

#[test]
fn bad_log_directives_and_journal_paths_get_one_escaped_bounded_warning() {
    let huge = format!("debug,{}", "x=y=z,".repeat(20_000));
    for value in [
        "rocm_fix_engine=loud,debug\nrocm-fix: forged line,a=b=c",
        huge.as_str(),
        "a/b/c",
    ] {
        let c = stats_cmd(&preload(), &[("ROCM_FIX_LOG", value)], &["dev"]);
        let (run, killed) = run_with_timeout(c, Duration::from_secs(30));
        assert!(!killed && run.code == Some(0), "{run:#?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert!(
            !lines.iter().any(|l| l.starts_with("warning")),
            "env_logger's own warnings: {}",
            &run.stderr[..run.stderr.len().min(2000)]
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("rocm-fix: forged")),
            "a forged line: {run:#?}"
        );
        let about: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("ROCM_FIX_LOG"))
            .collect();
        assert_eq!(about.len(), 1, "one warning: {run:#?}");
        assert!(about[0].starts_with("rocm-fix: ROCM_FIX_LOG="), "{run:#?}");
        assert!(
            run.stderr.len() < 4000,
            "bounded: {} bytes",
            run.stderr.len()
        );
    }
    // The good directive of a bad filter still applies.
    let c = stats_cmd(
        &preload(),
        &[("ROCM_FIX_LOG", "rocm_fix_engine=loud,debug")],
        &["dev"],
    );
    let (run, _) = run_with_timeout(c, Duration::from_secs(30));
    assert!(
        run.stderr.contains("rocm-fix[") && run.stderr.contains(" DEBUG: "),
        "{run:#?}"
    );

    // A journal in a folder that does not exist, with a newline in its name.
    let dir = tmpdir("hostile-jpath");
    let journal = dir.join("missing\nrocm-fix: forged/journal.jsonl");
    let mut c = sim_command(&program("simwork"), "gfx1010");
    c.env("LD_PRELOAD", preload())
        .env("ROCM_FIX_JOURNAL", &journal)
        .args(["malloc:0x200000", "read:0:0:0x400001"]);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(30));
    assert!(!killed, "{run:#?}");
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.starts_with("rocm-fix: forged")),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("missing\\nrocm-fix: forged/journal.jsonl: No such file"),
        "{run:#?}"
    );
}
