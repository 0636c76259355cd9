//! Secure-execution processes (AT_SECURE: setuid, setgid, capabilities):
//! rocm-fix ignores every environment setting and writes no files.
//!
//! The test runs a set-user-ID-root program as an unprivileged user (root
//! running a setuid-root program is not in secure mode). glibc ignores
//! LD_PRELOAD paths there, so the library comes from /etc/ld.so.preload, and
//! rocm-fix ignores SIMGPU_KFD_TOPOLOGY there, so the simulated topology is
//! mounted over /sys/class/kfd: both only inside a private mount namespace
//! (unshare -m), so the machine itself is untouched.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

struct Setup {
    dir: std::path::PathBuf,
    setuid: std::path::PathBuf,
    plain: std::path::PathBuf,
    topo: String,
}

fn setup() -> Setup {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "tests/secure.rs needs root (mount namespaces, a setuid-root program)"
    );
    // Everything the unprivileged user must read is copied into a folder of
    // its own (mode 755 under /tmp): the checkout itself may sit in a folder
    // other users cannot enter.
    let libs = tmpdir("secure-libs");
    std::fs::set_permissions(&libs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sim = simgpu_lib();
    for f in ["libamdhip64.so.6", "libhsa-runtime64.so.1"] {
        std::fs::copy(sim.join(f), libs.join(f)).unwrap();
    }
    let built = preload().parent().unwrap().to_path_buf();
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(built.join(f), libs.join(f)).unwrap();
    }
    let topo_src = simgpu_env("gfx1010")
        .into_iter()
        .find(|(k, _)| k == "SIMGPU_KFD_TOPOLOGY")
        .unwrap()
        .1;
    let topo = libs.join("topology");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&topo_src)
        .arg(&topo)
        .status()
        .unwrap();
    assert!(ok.success());
    let rpath = format!("-Wl,-rpath,{}", libs.display());
    let prog = program_with("secure_simwork", &[&rpath]);
    let dir = tmpdir("secure");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let setuid = dir.join("probe-setuid");
    let plain = dir.join("probe-plain");
    for p in [&setuid, &plain] {
        std::fs::copy(&prog, p).unwrap();
    }
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("ld.so.preload"),
        format!("{}\n", libs.join("librocm_fix.so").display()),
    )
    .unwrap();
    Setup {
        dir,
        setuid,
        plain,
        topo: topo.to_string_lossy().into_owned(),
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Removes an /etc/ld.so.preload that the test created (empty) when dropped.
struct PreloadFileGuard(bool);
impl Drop for PreloadFileGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file("/etc/ld.so.preload");
        }
    }
}

/// Runs `prog steps` as uid/gid 65534 in a mount namespace where
/// /etc/ld.so.preload names librocm_fix.so and the KFD topology is gfx1010's.
fn run_as_nobody(s: &Setup, prog: &std::path::Path, env: &[(&str, &str)], steps: &[&str]) -> Run {
    // The bind mount needs an existing target; an empty /etc/ld.so.preload is
    // a no-op, and it is removed again afterwards.
    let created = !std::path::Path::new("/etc/ld.so.preload").exists();
    if created {
        std::fs::write("/etc/ld.so.preload", "").unwrap();
    }
    let _guard = PreloadFileGuard(created);
    let script = format!(
        "set -e; mount -t tmpfs none /sys/class; mkdir -p /sys/class/kfd/kfd/topology; \
         mount --bind '{topo}' /sys/class/kfd/kfd/topology; \
         mount --bind '{dir}/ld.so.preload' /etc/ld.so.preload; \
         cd '{dir}'; exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$@\"",
        topo = s.topo,
        dir = s.dir.display()
    );
    let mut c = clean_command(std::path::Path::new("unshare"));
    c.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(prog)
        .args(steps);
    c.envs(env.iter().copied());
    Run::from(c.output().expect("unshare"))
}

#[test]
fn a_setuid_program_ignores_rocm_fix_variables_and_writes_nothing() {
    let s = setup();
    let journal = s.dir.join("journal.jsonl");
    let env = [
        ("ROCM_FIX_MODE", "off"),
        ("ROCM_FIX_JOURNAL", journal.to_str().unwrap()),
        ("ROCM_FIX_STATS", "1"),
        ("ROCM_FIX_LOG", "trace"),
        ("ROCM_FIX_PAD", "1G"),
        // The coherent read crashes only under the seed's hypothesis, asked for by name.
        ("SIMGPU_FAULT_RULES", "default,seed-coherent"),
    ];
    let steps = [
        "hostmalloc:4096:0",
        "read:0:0:4096",
        "malloc:0x200000",
        "read:1:0:0x400001",
    ];

    // Control: the same program without the setuid bit honours the variables:
    // mode off, so the coherent read crashes at once.
    let plain = run_as_nobody(&s, &s.plain, &env, &steps);
    assert!(plain.stdout.contains("secure=0"), "{plain:#?}");
    assert!(
        !plain.stdout.contains("read:0:0:4096 -> 0"),
        "mode off was honoured: {plain:#?}"
    );
    assert_rocr_page_fault(&plain, 1);

    // Secure: the variables are ignored. Mode stays auto (the coherent read is
    // rewritten and survives), the padding stays 64K (the read 2 MiB past the
    // end of a 2 MiB buffer faults), and neither the journal, the stats line nor a log line appears.
    let secure = run_as_nobody(&s, &s.setuid, &env, &steps);
    assert!(secure.stdout.contains("secure=1"), "{secure:#?}");
    assert!(
        secure.stdout.contains("read:0:0:4096 -> 0"),
        "auto mode kept: {secure:#?}"
    );
    assert_rocr_page_fault(&secure, 1);
    assert!(
        secure.stderr.contains("rocm-fix: the GPU faulted at"),
        "the hint still goes to stderr: {secure:#?}"
    );
    assert!(
        !secure.stderr.contains("rocm-fix: intercepted"),
        "no stats line: {secure:#?}"
    );
    assert!(
        !secure.stderr.contains("rocm-fix["),
        "no log lines: {secure:#?}"
    );
    assert!(!journal.exists(), "no journal written in secure mode");
    let files: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "nothing but the two programs and the preload list: {files:?}"
    );
}
