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

/// The ROCM_FIX_STATS=1 line's "intercepted N".
fn intercepted(run: &Run) -> u64 {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix: intercepted "))
        .unwrap_or_else(|| panic!("no ROCM_FIX_STATS line: {run:#?}"));
    line["rocm-fix: intercepted ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A real client against Debian's 5.2 with no GPU: without the preload, then
/// with it in `auto` and in `observe` mode; stdout and status must be the
/// same. Returns (without, auto, observe).
fn without_auto_observe(make: impl Fn() -> std::process::Command) -> (Run, Run, Run) {
    let without = Run::from(make().output().unwrap());
    let with = |mode: &str| {
        let mut c = make();
        c.env("LD_PRELOAD", preload())
            .env("ROCM_FIX_STATS", "1")
            .env("ROCM_FIX_MODE", mode);
        Run::from(c.output().unwrap())
    };
    let (auto, observe) = (with("auto"), with("observe"));
    for run in [&auto, &observe] {
        assert_eq!(without.stdout, run.stdout, "{run:#?}");
        assert_eq!(without.code, run.code, "{run:#?}");
    }
    // No GPU it applies to: passthrough, said at exit instead of counters.
    assert!(
        auto.stderr
            .contains("rocm-fix: passthrough (mode auto, no GPU it applies to)"),
        "{auto:#?}"
    );
    (without, auto, observe)
}

/// hip-python 10.0.0.0.1.2 (rocm-bindings-hip) and its CUDA names bind to
/// Debian's 5.2: every call answers the runtime's own no-device errors,
/// identical with the preload. In observe mode rocm-fix counts the client's
/// hooked calls, and more: without a device, Debian's 5.2 calls hsa_init
/// again on each HIP call (one more interception per call, seen one call at
/// a time), which the preload sees through the runtime's PLT.
#[test]
fn hip_python_10_on_debians_rocm_5_2_sees_identical_results_and_is_counted() {
    let py = root().join("target/clients/hip10/bin/python");
    assert!(
        py.exists(),
        "scripts/install-clients installs target/clients/hip10"
    );
    let script = root().join("tests/programs/hip_python10_client.py");
    let (without, _, observe) = without_auto_observe(|| {
        let mut c = clean_command(&py);
        c.arg(&script).arg("real");
        c
    });
    assert_eq!(without.code, Some(0), "{without:#?}");
    for line in [
        "hipGetDeviceCount -> 100",
        "cudaMalloc -> 101",
        "cuMemAlloc -> 101",
    ] {
        assert!(
            without.stdout.lines().any(|l| l == line),
            "{line}: {without:#?}"
        );
    }
    let hooked: u64 = without
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("client: hooked calls "))
        .expect("the client's count")
        .parse()
        .unwrap();
    let n = intercepted(&observe);
    assert!(
        n > hooked,
        "{hooked} hooked calls, {n} intercepted: {observe:#?}"
    );
    // The C API, from ctypes, says the same as the exit line.
    assert!(
        observe.stderr.contains(&format!(
            "client: rocm_fix_get_stats intercepted {n} rewritten 0 padded 0"
        )),
        "{observe:#?}"
    );
}

/// hip-python 6.2.0.499.16 on Debian's 5.2, in auto and observe mode.
#[test]
fn hip_python_6_2_on_debians_rocm_5_2_is_identical_in_auto_and_observe_mode() {
    let py = hip_python();
    let script = root().join("tests/programs/hip_python_client.py");
    let (without, _, observe) = without_auto_observe(|| {
        let mut c = clean_command(&py);
        c.arg(&script).arg("matrix");
        c
    });
    assert_eq!(without.code, Some(0), "{without:#?}");
    assert!(
        without.stdout.contains("hipGetDeviceCount -> 100"),
        "{without:#?}"
    );
    // Its 6 calls to hooked functions, each seen (and 5.2's own hsa_init
    // calls besides); the C API, from ctypes, says the same as the exit line.
    assert!(
        without.stderr.contains("client: hooked calls 6\n"),
        "{without:#?}"
    );
    let n = intercepted(&observe);
    assert!(n > 6, "{observe:#?}");
    assert!(
        observe.stderr.contains(&format!(
            "client: rocm_fix_get_stats intercepted {n} rewritten 0 padded 0"
        )),
        "{observe:#?}"
    );
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
