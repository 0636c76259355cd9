//! Transparency against real code no one here wrote: Debian's ROCm 5.2
//! runtime (libamdhip64.so.5) and AMD's hip-python from PyPI. Without an AMD
//! GPU the runtime answers with its own errors; with or without the
//! preload, the answers must be identical. hip-python on the simulated
//! gfx1010 must get the same treatment as a linked client.

mod common;
use common::*;
use std::path::PathBuf;

#[test]
fn a_matrix_of_hip_calls_on_debians_rocm_is_unchanged_by_the_preload() {
    let prog = program_with("real_matrix", &["--real-rocm"]);
    let ldd = clean_command(std::path::Path::new("ldd"))
        .arg(&prog)
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
    assert!(
        ldd.contains("libamdhip64.so.5 => /") && !ldd.contains("simgpu"),
        "Debian's runtime: {ldd}"
    );
    let (without, with) = both(|| clean_command(&prog), &[]);
    assert_eq!(without.code, Some(0), "{without:#?}");
    assert!(without.stdout.lines().count() >= 28, "{}", without.stdout);
    assert_eq!(without.stdout, with.stdout);
    assert_eq!(with.code, without.code);
    // Also when rocm-fix believes an RDNA1 card is present (active path: padding,
    // rewrites and retries all run against the real runtime's errors).
    let topo = simgpu_env("gfx1010")
        .into_iter()
        .find(|(k, _)| k == "SIMGPU_KFD_TOPOLOGY")
        .unwrap()
        .1;
    let (_, active) = both(
        || clean_command(&prog),
        &[("SIMGPU_KFD_TOPOLOGY", &topo), ("ROCM_FIX_MODE", "on")],
    );
    assert_eq!(without.stdout, active.stdout);
}

fn hip_python() -> PathBuf {
    let py = root().join("target/pyenv/bin/python");
    assert!(
        py.exists(),
        "hip-python is installed by scripts/install-deps into target/pyenv; run it first"
    );
    py
}

#[test]
fn hip_python_on_debians_rocm_sees_identical_results() {
    let py = hip_python();
    let script = root().join("tests/programs/hip_python_client.py");
    let (without, with) = both(
        || {
            let mut c = clean_command(&py);
            c.arg(&script).arg("matrix");
            c
        },
        &[],
    );
    assert_eq!(without.code, Some(0), "{without:#?}");
    assert!(
        without.stdout.contains("hipGetDeviceCount -> 100"),
        "{without:#?}"
    );
    assert_eq!(without.stdout, with.stdout);
}

#[test]
fn hip_python_on_the_simulated_rx_5700_xt_gets_the_same_treatment() {
    let py = hip_python();
    let script = root().join("tests/programs/hip_python_client.py");
    let (without, with) = both(
        || {
            let mut c = sim_command(&py, "gfx1010");
            c.arg(&script).args(["sim", "4096"]);
            c
        },
        &[],
    );
    assert_rocr_page_fault(&without, 1);
    assert_eq!(with.code, Some(0), "{with:#?}");
    for line in [
        "hipHostMalloc -> 0",
        "read -> 0",
        "over-read -> 0",
        "hipFree -> 0",
        "hipHostFree -> 0",
    ] {
        assert!(with.stdout.contains(line), "{line}: {with:#?}");
    }
}
