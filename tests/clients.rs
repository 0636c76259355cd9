//! Real clients no one here wrote, on the simulated RX 5700 XT (gfx1010):
//! AMD's hip-python 10 with hip-python-interop (the CUDA-named API), and
//! CuPy's ROCm wheels with their memory pool. Each runs without and with the
//! preload: the over-read past a 2 MiB buffer's end faults without it (ROCr's
//! abort up to 6.x, hipErrorIllegalAddress from then on in 7.x) and is
//! survived with it, and rocm-fix's own counters, read by the client through
//! `rocm_fix_get_stats`, show the buffer got the sink. The clients are
//! installed by scripts/install-clients (run by scripts/install-deps) from
//! wheels cached in target/wheels.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn client(venv: &str) -> PathBuf {
    let py = root().join("target/clients").join(venv).join("bin/python");
    assert!(
        py.exists(),
        "{} is installed by scripts/install-clients (run by scripts/install-deps); run it first",
        py.display()
    );
    py
}

/// The stub libraries CuPy's wheels link and the simulation lacks.
fn stubs(major: &str) -> PathBuf {
    let d = root().join(format!("target/clients/stubs-{major}"));
    assert!(
        d.join(".done").exists(),
        "{} is built by scripts/install-clients",
        d.display()
    );
    d
}

/// `py script args…` on the simulated gfx1010 of `version`, with `extra_lib`
/// after the simulated libraries on the library path.
fn on_sim(py: &Path, version: &str, extra_lib: Option<&Path>, args: &[&str]) -> Command {
    let mut c = clean_command(py);
    for (k, v) in simgpu_env_for("gfx1010", version) {
        let v = match (k.as_str(), extra_lib) {
            ("LD_LIBRARY_PATH", Some(extra)) => format!("{v}:{}", extra.display()),
            _ => v,
        };
        c.env(k, v);
    }
    c.args(args);
    c
}

/// The fault the over-read takes without the preload, as the user sees it on
/// each release: ROCr's message and an abort up to 6.x; in 7.x clr's sticky
/// hipErrorIllegalAddress (700), returned by the launch.
fn assert_faulted(without: &Run, version: &str) {
    if version.starts_with('7') {
        assert!(without.stdout.contains("over-read -> 700"), "{without:#?}");
        assert!(without.rocr_message().is_none(), "{without:#?}");
    } else {
        assert_rocr_page_fault(without, 1);
        assert!(!without.stdout.contains("over-read ->"), "{without:#?}");
    }
}

/// The `rocm-fix: intercepted …` line ROCM_FIX_STATS=1 prints at exit, from
/// "protected" on (what the allocations got, not how many calls it took).
fn protected_part(run: &Run) -> String {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix: intercepted "))
        .unwrap_or_else(|| panic!("no ROCM_FIX_STATS line: {run:#?}"));
    let at = line.find("protected").expect("protected");
    line[at..line.find(" faults").unwrap_or(line.len())].to_string()
}

fn hip_python_10_on(version: &str) {
    let py = client("hip10");
    let script = root().join("tests/programs/hip_python10_client.py");
    let script = script.to_str().unwrap();
    for (api, names) in [
        (
            "hip",
            ["hipHostMalloc", "hipMalloc", "hipFree", "hipHostFree"],
        ),
        (
            "cudart",
            ["cudaHostAlloc", "cudaMalloc", "cudaFree", "cudaFreeHost"],
        ),
        (
            "cudrv",
            ["cuMemHostAlloc", "cuMemAlloc", "cuMemFree", "cuMemFreeHost"],
        ),
    ] {
        let (without, with) = both(
            || on_sim(&py, version, None, &[script, "sim", api, "4096"]),
            &[("ROCM_FIX_STATS", "1")],
        );
        assert_faulted(&without, version);
        assert_eq!(with.code, Some(0), "{version} {api}: {with:#?}");
        for n in names {
            assert!(
                with.stdout.contains(&format!("{n} -> 0")),
                "{version} {api} {n}: {with:#?}"
            );
        }
        assert!(with.stdout.contains("over-read -> 0"), "{with:#?}");
        // Every call of the workload reached the hooks (the two allocations,
        // the two frees, and the runtime's own hsa_init), and the 2 MiB
        // buffer got the sink.
        assert!(
            with.stdout.contains("intercepted 5 ") && with.stdout.contains(" padded 1"),
            "{version} {api}: {with:#?}"
        );
        assert!(
            with.stderr.contains("rocm-fix: intercepted 5 "),
            "{version} {api}: {with:#?}"
        );
    }
}

#[test]
fn hip_python_10_and_its_cuda_names_reach_rocm_fix_on_the_simulated_5_2() {
    hip_python_10_on("5.2");
}

#[test]
fn hip_python_10_and_its_cuda_names_reach_rocm_fix_on_the_simulated_6_4() {
    hip_python_10_on("6.4");
}

#[test]
fn hip_python_10_and_its_cuda_names_reach_rocm_fix_on_the_simulated_7_2() {
    hip_python_10_on("7.2");
}

/// CuPy's pool on the simulated `version` (stub libraries of ROCm `major`),
/// its modules loaded with RTLD_LAZY if `lazy`.
fn cupy_pool(venv: &str, version: &str, major: &str, lazy: bool) {
    let py = client(venv);
    let stubs = stubs(major);
    let script = root().join("tests/programs/cupy_client.py");
    let mut args = vec![script.to_str().unwrap(), "4096"];
    if lazy {
        args.push("--lazy");
    }
    let (without, with) = both(
        || on_sim(&py, version, Some(&stubs), &args),
        &[("ROCM_FIX_STATS", "1")],
    );
    assert!(
        without.stdout.contains("pool segment 2097152 bytes")
            && without.stdout.contains("reused True"),
        "{without:#?}"
    );
    assert_faulted(&without, version);
    assert_eq!(with.code, Some(0), "{with:#?}");
    assert!(with.stdout.contains("over-read -> 0"), "{with:#?}");
    // Importing CuPy and allocating from its pool calls none of the stubs.
    assert!(!with.stderr.contains("simgpu stub"), "{with:#?}");
    // The pool's one hipMalloc got the sink; taking the segment again from the
    // pool calls nothing, so the counters do not move.
    let lines: Vec<&str> = with
        .stdout
        .lines()
        .filter(|l| l.starts_with("rocm-fix: "))
        .collect();
    assert_eq!(lines.len(), 3, "{with:#?}");
    assert!(lines[0].contains(" padded 1 live 1"), "{with:#?}");
    assert!(lines.iter().all(|l| *l == lines[0]), "{with:#?}");
    // The same as a program linked against the same release asking hipMalloc
    // for 2 MiB.
    let linked = program_with("linked_malloc", &[&format!("--simgpu={version}")]);
    let mut c = on_sim(&linked, version, None, &["0x200000"]);
    c.env("LD_PRELOAD", preload()).env("ROCM_FIX_STATS", "1");
    let linked = Run::from(c.output().unwrap());
    assert_eq!(linked.code, Some(0), "{linked:#?}");
    assert_eq!(protected_part(&with), protected_part(&linked));
}

#[test]
fn cupy_rocm_7_0_pool_segments_get_the_sink_on_the_simulated_so7() {
    cupy_pool("cupy7", "7.2", "7", false);
}

#[test]
fn cupy_rocm_5_0_pool_segments_get_the_sink_on_the_simulated_so5_when_loaded_lazily() {
    cupy_pool("cupy5", "5.2", "5", true);
}

/// cupy-rocm-5-0 13.3.0 was built against headers in which hipSurfaceObject_t
/// is an integer: its runtime module imports the C++ symbol
/// `_Z23hipDestroySurfaceObjecty`, which ROCm 5.2's libamdhip64 does not
/// export (it has the `__hip_surface*` overloads). Python loads extension
/// modules with RTLD_NOW, so `import cupy` fails against Debian's real 5.2 as
/// against the simulated one, with or without the preload.
#[test]
fn cupy_rocm_5_0_does_not_import_against_rocm_5_2_as_shipped() {
    let py = client("cupy5");
    let stubs = stubs("5");
    let symbol = "undefined symbol: _Z23hipDestroySurfaceObjecty, version hip_4.2";
    let (without, with) = both(
        || on_sim(&py, "5.2", Some(&stubs), &["-c", "import cupy"]),
        &[],
    );
    assert_eq!(without.code, Some(1), "{without:#?}");
    assert!(without.stderr.contains(symbol), "{without:#?}");
    assert_eq!(with.code, without.code);
    assert!(with.stderr.contains(symbol), "{with:#?}");
    // Debian's real libamdhip64.so.5 (scripts/install-deps installs it).
    let mut c = clean_command(&py);
    c.env("LD_LIBRARY_PATH", &stubs).args(["-c", "import cupy"]);
    let real = Run::from(c.output().unwrap());
    assert_eq!(real.code, Some(1), "{real:#?}");
    assert!(real.stderr.contains(symbol), "{real:#?}");
}
