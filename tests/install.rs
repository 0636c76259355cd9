//! `scripts/install` from source: into a DESTDIR, where each file's tool
//! looks for it, and `--uninstall` leaves nothing behind.

mod common;
use common::{root, tmpdir};
use std::path::Path;
use std::process::Command;

fn install(args: &[&str]) -> std::process::Output {
    let out = Command::new(root().join("scripts/install"))
        .args(args)
        .output()
        .expect("run scripts/install");
    assert!(
        out.status.success(),
        "scripts/install {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            all.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    all.sort();
    all
}

#[test]
fn installs_where_the_tools_look_and_uninstalls_to_nothing() {
    let dest = tmpdir("install");
    let d = dest.to_str().unwrap();
    install(&["--prefix", "/usr", "--destdir", d]);
    let usr = dest.join("usr");
    for f in [
        "lib/x86_64-linux-gnu/librocm_fix.so",
        "lib/x86_64-linux-gnu/librocm_fix_engine.so",
        "bin/rocm-fix",
        "bin/rocm-fix-run",
        "share/man/man1/rocm-fix.1.gz",
        "share/man/man1/rocm-fix-run.1.gz",
        "share/man/man1/rocm-fix-doctor.1.gz",
        "share/bash-completion/completions/rocm-fix",
        "share/zsh/site-functions/_rocm-fix",
        "share/fish/vendor_completions.d/rocm-fix.fish",
        // The probe kernels of `rocm-fix validate`, where it looks from bin/.
        "lib/rocm-fix/probes/probes.co",
        "lib/rocm-fix/probes/TARGETS",
    ] {
        assert!(
            usr.join(f).exists(),
            "{f} missing: {:?}",
            files_under(&dest)
        );
    }
    // The installed command works, under both names.
    let v = Command::new(usr.join("bin/rocm-fix-run"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("Usage: rocm-fix run"));
    let bash =
        std::fs::read_to_string(usr.join("share/bash-completion/completions/rocm-fix")).unwrap();
    assert!(
        bash.contains("kernel-params"),
        "generated from the definitions"
    );

    install(&["--prefix", "/usr", "--destdir", d, "--uninstall"]);
    assert_eq!(files_under(&dest), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dest);
}
