//! Installing system-wide: `rocm-fix preload enable|disable|status` on an
//! image root (--root), with the bad inputs a packager or a user may bring.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn rocm_fix() -> PathBuf {
    preload().parent().unwrap().join("rocm-fix")
}

const LIB: &str = "/usr/lib/x86_64-linux-gnu/librocm_fix.so";

fn preload_cmd(root: &Path, args: &[&str]) -> Run {
    Run::from(
        Command::new(rocm_fix())
            .arg("preload")
            .args(args)
            .arg("--root")
            .arg(root)
            .output()
            .unwrap(),
    )
}

#[test]
fn enable_and_disable_keep_everything_else_byte_for_byte() {
    let root = image("preload-crlf");
    let file = root.join("etc/ld.so.preload");
    let original = "# site preloads\r\n/usr/lib/x86_64-linux-gnu/libeatmydata.so\r\n";
    std::fs::write(&file, original).unwrap();
    let run = preload_cmd(&root, &["enable"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        format!("{original}{LIB}\n"),
        "our line appended with \\n only"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ld.so.preload.rocm-fix.bak")).unwrap(),
        original
    );
    let run = preload_cmd(&root, &["enable"]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("already lists"), "idempotent: {run:#?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let run = preload_cmd(&root, &["status"]);
    assert!(
        run.stdout
            .contains(&format!("{LIB}: rocm-fix, loads cleanly")),
        "{run:#?}"
    );
    // The CRLF line's path ends in \r for the dynamic linker: shown, not fixed.
    assert!(
        run.stdout.contains("libeatmydata.so\\r: MISSING"),
        "{run:#?}"
    );
    assert!(
        !run.stdout.contains("site"),
        "comments are not entries: {run:#?}"
    );
    let run = preload_cmd(&root, &["disable"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        original.as_bytes(),
        "byte-identical after disable"
    );
}

#[test]
fn a_file_that_enable_created_is_removed_by_disable() {
    let root = image("preload-new");
    assert_eq!(preload_cmd(&root, &["enable"]).code, Some(0));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ld.so.preload")).unwrap(),
        format!("{LIB}\n")
    );
    assert_eq!(preload_cmd(&root, &["disable"]).code, Some(0));
    assert!(!root.join("etc/ld.so.preload").exists());
    let run = preload_cmd(&root, &["status"]);
    assert_eq!(run.code, Some(1), "not enabled: {run:#?}");
}

#[test]
fn bad_libraries_are_refused_and_nothing_is_lost() {
    let root = image("preload-bad");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            "/usr/lib/x86_64-linux-gnu/librocm_fix_missing.so".into(),
            "does not exist",
        ),
        ("/etc/hostname-not-elf".into(), "not an ELF file"),
        ("relative/librocm_fix.so".into(), "must be absolute"),
    ];
    std::fs::write(root.join("etc/hostname-not-elf"), "not a library\n").unwrap();
    for (lib, msg) in cases {
        let run = preload_cmd(&root, &["enable", "--library", &lib]);
        assert_eq!(run.code, Some(3), "{lib}: {run:#?}");
        assert!(
            run.stderr.contains(msg) && run.stderr.contains("nothing was changed"),
            "{lib}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "/lib/keep.so\n");
    }
    // An ELF of another architecture: a 32-bit object.
    let elf32 = root.join("usr/lib/x86_64-linux-gnu/libother.so");
    let mut bytes = std::fs::read(root.join("usr/lib/x86_64-linux-gnu/librocm_fix.so")).unwrap();
    bytes[4] = 1;
    std::fs::write(&elf32, bytes).unwrap();
    let run = preload_cmd(
        &root,
        &[
            "enable",
            "--library",
            "/usr/lib/x86_64-linux-gnu/libother.so",
        ],
    );
    assert!(run.stderr.contains("another architecture"), "{run:#?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/lib/keep.so\n");
}

#[test]
fn a_read_only_etc_is_a_clear_error() {
    let root = image("preload-ro");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    let etc = root.join("etc");
    let script = format!(
        "mount --bind '{e}' '{e}' && mount -o remount,bind,ro '{e}' && exec '{bin}' preload enable --root '{r}'",
        e = etc.display(),
        bin = rocm_fix().display(),
        r = root.display()
    );
    let run = Run::from(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("Read-only file system") && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/lib/keep.so\n");
}

#[test]
fn an_edit_in_progress_is_waited_for_then_refused_clearly() {
    // Someone else holds the edit lock (as a second rocm-fix would).
    let root = image("preload-lock");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    // The lock is a flock on the etc folder itself: no lock file to leave behind.
    let lock = root.join("etc");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = preload_cmd(&root, &["enable"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("another rocm-fix is editing"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/lib/keep.so\n");
}

#[test]
fn two_enables_at_once_add_one_line() {
    let root = image("preload-race");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    let spawn = || {
        Command::new(rocm_fix())
            .args(["preload", "enable", "--root"])
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("/lib/keep.so\n{LIB}\n")
    );
}

#[test]
fn without_root_the_live_file_is_not_touched() {
    // A copy the unprivileged user can reach (the checkout may not be).
    let dir = tmpdir("preload-nonroot");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(rocm_fix(), dir.join("rocm-fix")).unwrap();
    let script = format!(
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups '{}' preload enable",
        dir.join("rocm-fix").display()
    );
    let run = Run::from(
        Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("needs root"), "{}", run.stderr);
}

fn same_tree(a: &Path, b: &Path) -> bool {
    Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

fn kparams(spec: &str, root: &Path, args: &[&str]) -> Run {
    let mut c = sim_command(&rocm_fix(), spec);
    c.arg("kernel-params").args(args).arg("--root").arg(root);
    Run::from(c.output().unwrap())
}

#[test]
fn kernel_params_apply_only_what_the_evidence_supports_and_revert_exactly() {
    let fixture = root().join("tests/fixtures/kparams/grub");
    let img = tmpdir("kparams-grub");
    copy_tree(&fixture, &img);
    // An RX 5700 XT: nothing has evidence enough; apply writes nothing.
    let run = kparams("gfx1010", &img, &["plan"]);
    assert!(
        run.stdout.contains("Nothing is worth applying"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("amdgpu.noretry=0") && run.stdout.contains("[none-found]"),
        "{}",
        run.stdout
    );
    assert_eq!(kparams("gfx1010", &img, &["apply"]).code, Some(0));
    assert!(same_tree(&fixture, &img), "nothing written for gfx1010");
    // Strix Halo (gfx1151): amdgpu.cwsr_enable=0 is confirmed there.
    let run = kparams("gfx1151", &img, &["plan", "--json"]);
    assert!(
        run.stdout.contains("\"amdgpu.cwsr_enable\""),
        "{}",
        run.stdout
    );
    assert_eq!(
        kparams("gfx1151", &img, &["apply", "--dry-run"]).code,
        Some(0)
    );
    assert!(same_tree(&fixture, &img), "--dry-run writes nothing");
    let run = kparams("gfx1151", &img, &["apply"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let dropin = std::fs::read_to_string(img.join("etc/default/grub.d/90-rocm-fix.cfg")).unwrap();
    assert!(
        dropin.contains(
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT amdgpu.cwsr_enable=0\""
        ),
        "{dropin}"
    );
    assert!(
        run.stdout.contains("update-grub"),
        "the regeneration command is printed: {}",
        run.stdout
    );
    let again = kparams("gfx1151", &img, &["apply"]);
    assert_eq!(again.code, Some(0), "idempotent: {again:#?}");
    assert_eq!(
        std::fs::read_to_string(img.join("etc/default/grub.d/90-rocm-fix.cfg")).unwrap(),
        dropin
    );
    assert_eq!(kparams("gfx1151", &img, &["revert"]).code, Some(0));
    assert!(
        same_tree(&fixture, &img),
        "revert restores exactly what was there"
    );
    // A machine whose boot loader rocm-fix does not know: a clear refusal.
    let unknown = tmpdir("kparams-unknown");
    copy_tree(&root().join("tests/fixtures/kparams/unknown"), &unknown);
    let run = kparams("gfx1151", &unknown, &["apply"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.to_lowercase().contains("nothing was changed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_library_others_could_replace_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = image("preload-untrusted");
    let lib = root.join("usr/lib/x86_64-linux-gnu/librocm_fix.so");
    std::os::unix::fs::chown(&lib, Some(65534), None).unwrap();
    let run = preload_cmd(&root, &["enable"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("not owned by root"), "{}", run.stderr);
    std::os::unix::fs::chown(&lib, Some(0), None).unwrap();
    let dir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = preload_cmd(&root, &["enable"]);
    assert!(run.stderr.contains("writable by others"), "{}", run.stderr);
    assert!(!root.join("etc/ld.so.preload").exists(), "nothing written");
}

#[test]
fn mode_owner_symlinks_and_shared_lines() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = image("preload-mode");
    let file = root.join("etc/ld.so.preload");
    std::fs::write(&file, "/lib/keep.so\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A umask of 077 must not make the file unreadable to other users.
    let run = Run::from(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 077; exec '{}' preload enable --root '{}'",
                rocm_fix().display(),
                root.display()
            ))
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
    assert_eq!(preload_cmd(&root, &["disable"]).code, Some(0));
    // Our entry sharing a line with another one: only ours goes (a line
    // enable did not add is removed only with --force).
    std::fs::write(&file, format!("/lib/keep.so {LIB}\n")).unwrap();
    let run = preload_cmd(&root, &["disable", "--force"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/lib/keep.so\n");
    // A symbolic link is not replaced by a file.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(root.join("etc/preload.real"), "/lib/keep.so\n").unwrap();
    std::os::unix::fs::symlink("preload.real", &file).unwrap();
    let run = preload_cmd(&root, &["enable"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert!(std::fs::symlink_metadata(&file)
        .unwrap()
        .file_type()
        .is_symlink());
    // A '#' would cut the path short for the linker.
    let odd = root.join("opt/a#b");
    std::fs::create_dir_all(&odd).unwrap();
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(root.join("usr/lib/x86_64-linux-gnu").join(f), odd.join(f)).unwrap();
    }
    std::fs::set_permissions(root.join("opt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(&file).unwrap();
    let run = preload_cmd(&root, &["enable", "--library", "/opt/a#b/librocm_fix.so"]);
    assert!(run.stderr.contains("'#'"), "{run:#?}");
}
