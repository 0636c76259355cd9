//! Hostile files and paths for the command (issue 13): special files are
//! refused with exit 2 and never block, reads are bounded, `preload
//! enable/disable` leave nothing of theirs behind and remove only what they
//! added, `preload status` finds bare sonames as the linker does, and
//! `kernel-params --root` never leaves its root. Everything on image roots
//! in temporary folders.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rocm_fix() -> PathBuf {
    preload().parent().unwrap().join("rocm-fix")
}

const LIB: &str = "/usr/lib/x86_64-linux-gnu/librocm_fix.so";

fn rocm_fix_cmd(args: &[&str]) -> Command {
    let mut c = clean_command(&rocm_fix());
    c.args(args);
    c
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

fn preload_cmd(root: &Path, args: &[&str]) -> Run {
    let mut c = rocm_fix_cmd(&["preload"]);
    c.args(args).arg("--root").arg(root);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!killed, "preload {args:?} blocked: {run:#?}");
    run
}

/// Every path under `root` with its kind and bytes: "exactly as it was".
fn snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if m.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else {
                "special".to_string()
            };
            out.push((p.strip_prefix(root).unwrap().to_path_buf(), what));
        }
    }
    out.sort();
    out
}

#[test]
fn special_files_as_input_are_a_clear_error_and_never_block() {
    let dir = tmpdir("hostile-cmd-input");
    let fifo = dir.join("rocminfo.fifo");
    mkfifo(&fifo);
    for input in [fifo.to_str().unwrap(), "/dev/zero", dir.to_str().unwrap()] {
        let (run, killed) =
            run_with_timeout(rocm_fix_cmd(&["triage", input]), Duration::from_secs(20));
        assert!(!killed, "triage {input} blocked: {run:#?}");
        assert_eq!(run.code, Some(2), "{input}: {run:#?}");
        assert!(
            run.stderr.starts_with(&format!(
                "rocm-fix: cannot read {input}: is not a regular file ("
            )),
            "{run:#?}"
        );
    }
    // stdin that never ends is read only up to the bound.
    let mut c = Command::new("sh");
    c.args([
        "-c",
        &format!("exec '{}' triage - < /dev/zero", rocm_fix().display()),
    ]);
    let (run, killed) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!killed, "{run:#?}");
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("is larger than"), "{run:#?}");

    // ld.so.preload as a link to /dev/zero, or a FIFO.
    for (tag, make) in [("hostile-cmd-zero", "link"), ("hostile-cmd-fifo", "fifo")] {
        let root = image(tag);
        let file = root.join("etc/ld.so.preload");
        if make == "link" {
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        } else {
            mkfifo(&file);
        }
        let run = preload_cmd(&root, &["status"]);
        assert_eq!(run.code, Some(2), "{make}: {run:#?}");
        assert!(run.stderr.contains("is not a regular file"), "{run:#?}");
        let before = snapshot(&root);
        let run = preload_cmd(&root, &["enable"]);
        assert_eq!(run.code, Some(3), "{make}: {run:#?}");
        assert!(run.stderr.contains("nothing was changed"), "{run:#?}");
        assert_eq!(
            snapshot(&root),
            before,
            "{make}: a refused enable changed the tree"
        );
    }

    // kernel-params with its state file a FIFO.
    let img = tmpdir("hostile-cmd-kparams");
    copy_tree(&root().join("tests/fixtures/kparams/grub"), &img);
    std::fs::create_dir_all(img.join("var/lib/rocm-fix")).unwrap();
    mkfifo(&img.join("var/lib/rocm-fix/kernel-params.state"));
    let (run, killed) = kparams("gfx1151", &img, &["revert"]);
    assert!(!killed, "{run:#?}");
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("is not a regular file"), "{run:#?}");
}

#[test]
fn enable_and_disable_leave_nothing_of_theirs_and_remove_only_what_they_added() {
    // A fresh root: enable then disable leaves it exactly as it was.
    let root = image("hostile-cmd-fresh");
    let before = snapshot(&root);
    assert_eq!(preload_cmd(&root, &["enable"]).code, Some(0));
    let run = preload_cmd(&root, &["disable"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(snapshot(&root), before, "enable+disable left something");

    // An enable that changes nothing writes nothing.
    let root = image("hostile-cmd-noop");
    std::fs::write(root.join("etc/ld.so.preload"), format!("{LIB}\n")).unwrap();
    let before = snapshot(&root);
    let run = preload_cmd(&root, &["enable"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("already lists"), "{run:#?}");
    assert_eq!(snapshot(&root), before, "a no-op enable left a file");

    // The user's own librocm_fix.so line, which enable did not add.
    let root = image("hostile-cmd-users");
    let file = root.join("etc/ld.so.preload");
    let users = "/usr/local/lib/librocm_fix.so\n";
    std::fs::write(&file, users).unwrap();
    let before = snapshot(&root);
    let run = preload_cmd(&root, &["disable"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains(
            "lists /usr/local/lib/librocm_fix.so, which 'rocm-fix preload enable' did not add"
        ) && run.stderr.contains("--force"),
        "{run:#?}"
    );
    assert_eq!(
        snapshot(&root),
        before,
        "a refused disable changed the tree"
    );
    let run = preload_cmd(&root, &["disable", "--force"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("/usr/local/lib/librocm_fix.so"),
        "--force says which: {run:#?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");

    // enable added its line next to the user's edits: disable takes only its own.
    let root = image("hostile-cmd-edited");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    assert_eq!(preload_cmd(&root, &["enable"]).code, Some(0));
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("/opt/mine/librocm_fix.so\n");
    std::fs::write(&file, &text).unwrap();
    let run = preload_cmd(&root, &["disable"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "/lib/keep.so\n/opt/mine/librocm_fix.so\n"
    );
    assert!(
        run.stdout.contains("kept /opt/mine/librocm_fix.so"),
        "{run:#?}"
    );
}

#[test]
fn status_finds_bare_sonames_as_the_linker_does() {
    let root = image("hostile-cmd-soname");
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::write(libdir.join("libm.so.6"), "").unwrap();
    std::fs::write(
        root.join("etc/ld.so.preload"),
        format!("libm.so.6\nlibnothere.so.1\n{LIB}\n"),
    )
    .unwrap();
    let run = preload_cmd(&root, &["status"]);
    assert!(
        run.stdout
            .contains("libm.so.6: present (found as /usr/lib/x86_64-linux-gnu/libm.so.6)"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("libnothere.so.1: MISSING"), "{run:#?}");
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn kernel_params_never_resolve_outside_the_root_and_escape_garbage() {
    // ROOT/var/lib/rocm-fix is a link to a folder outside the root.
    let outside = tmpdir("hostile-cmd-outside");
    let img = tmpdir("hostile-cmd-kp-link");
    copy_tree(&root().join("tests/fixtures/kparams/grub"), &img);
    std::fs::create_dir_all(img.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&outside, img.join("var/lib/rocm-fix")).unwrap();
    let before = snapshot(&img);
    let (run, killed) = kparams("gfx1151", &img, &["apply"]);
    assert!(!killed);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("leads outside") && run.stderr.contains("Nothing was changed"),
        "{run:#?}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside the root"
    );
    assert_eq!(snapshot(&img), before);

    // Binary garbage in the state file reaches the terminal escaped.
    let img = tmpdir("hostile-cmd-kp-garbage");
    copy_tree(&root().join("tests/fixtures/kparams/grub"), &img);
    std::fs::create_dir_all(img.join("var/lib/rocm-fix")).unwrap();
    std::fs::write(
        img.join("var/lib/rocm-fix/kernel-params.state"),
        b"format 1\n\x1b[2J\x07evil\x1b]0;title\x07 x\n",
    )
    .unwrap();
    let (run, _) = kparams("gfx1151", &img, &["revert"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("not a state file"), "{run:#?}");
    assert!(
        !run.stderr.contains('\x1b') && !run.stderr.contains('\x07'),
        "raw control bytes: {run:#?}"
    );
    assert!(run.stderr.contains("\\u{1b}[2J"), "{run:#?}");
}

fn kparams(spec: &str, root: &Path, args: &[&str]) -> (Run, bool) {
    let mut c = sim_command(&rocm_fix(), spec);
    c.arg("kernel-params").args(args).arg("--root").arg(root);
    run_with_timeout(c, Duration::from_secs(60))
}

/// `rocm-fix run` with a clean environment and run folders under `state`.
fn run_cmd(state: &Path, args: &[&str]) -> Command {
    let mut c = sim_command(&rocm_fix(), "gfx1010");
    c.arg("run")
        .args(args)
        .env("XDG_STATE_HOME", state)
        .env("TMPDIR", state.join("tmp"));
    c
}

fn alive(pid: i32) -> bool {
    // A zombie (reaped later by whoever adopted it) is dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[test]
fn the_command_dies_with_a_killed_supervisor() {
    let state = tmpdir("hostile-cmd-pdeath");
    let pidfile = state.join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 120", pidfile.display());
    let mut c = run_cmd(&state, &["--no-presets", "--", "sh", "-c", &script]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut supervisor = c.spawn().unwrap();
    let start = Instant::now();
    let pid: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(pid));
    supervisor.kill().unwrap(); // SIGKILL
    let _ = supervisor.wait();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan = alive(pid);
    if orphan {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    assert!(
        !orphan,
        "the command ran on after its supervisor was killed"
    );
}

#[test]
fn run_checks_an_explicit_preload_and_keeps_its_folders_in_one_bounded_place() {
    let state = tmpdir("hostile-cmd-runs");
    std::fs::create_dir_all(state.join("tmp")).unwrap();
    let marker = state.join("ran");
    let run = Run::from(
        run_cmd(
            &state,
            &[
                "--preload",
                "/etc/hostname",
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(2), "a bad --preload is bad input: {run:#?}");
    assert!(
        run.stderr.contains("/etc/hostname is not an ELF file"),
        "{run:#?}"
    );
    assert!(!marker.exists(), "the command ran without rocm-fix");

    // Old run folders beyond the bound go; a run with a fault keeps its own,
    // under $XDG_STATE_HOME/rocm-fix/runs; nothing lands in the temporary folder.
    let runs = state.join("rocm-fix/runs");
    for i in 0..30 {
        std::fs::create_dir_all(runs.join(format!("run-10000000{i:02}.000000000-1"))).unwrap();
    }
    let fault =
        r#"{"event":"gpu-memory-fault","address":"0x1000","gfx":"gfx1010","allocation":null}"#;
    let script = format!("echo '{fault}' >> \"$ROCM_FIX_JOURNAL\"; kill -ABRT $$");
    let run = Run::from(
        run_cmd(&state, &["--no-retry", "--", "sh", "-c", &script])
            .output()
            .unwrap(),
    );
    assert!(run.stderr.contains("run report: "), "{run:#?}");
    let kept: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 20, "{kept:?}");
    assert!(
        !kept.iter().any(|k| k.starts_with("run-1000000000")),
        "the oldest went: {kept:?}"
    );
    let report = run
        .stderr
        .split("run report: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        report.starts_with(runs.to_str().unwrap()) && Path::new(&report).is_file(),
        "{report}"
    );
    assert_eq!(std::fs::read_dir(state.join("tmp")).unwrap().count(), 0);
}
