//! Debian's own ROCm libraries as clients (issue 11): Debian 12's hipSPARSE /
//! rocSPARSE and hipRAND / rocRAND, the real binaries (downloaded, never
//! installed, by scripts/fetch-rocm-libs into target/debs/libs-5.2), linked
//! into tests/programs/debian_libs.c. They link libamdhip64.so.5, so they run
//! on the simulated 5.2 build, and on Debian's real 5.2 runtime of this
//! machine (no GPU: "no device").
//!
//! What they show: the device memory a library allocates for itself (a
//! rocSPARSE handle's 1 MiB buffer and four constants, a rocRAND generator's
//! 3 MiB of engine states) reaches rocm-fix as an application's allocation
//! does and gets exactly what the same allocations made by the program get;
//! on a GPU rocm-fix leaves alone, nothing changes. Their fat binaries carry
//! code objects for gfx803, gfx900, gfx906, gfx908, gfx90a and gfx1030, none
//! for gfx1010: on an RX 5700 XT ROCm 5.2 aborts at the first HIP call, with
//! or without rocm-fix.
//!
//! Debian sid's rocBLAS 4.4 / hipBLAS 2.4 (ROCm 6.4.4) and MIOpen 3.4
//! (6.4.3), in target/debs/libs-6.4, link libamdhip64.so.6 and need sid's C
//! runtime: they run on the simulated 6.4 build through sid's own loader
//! (unpacked beside them, never installed). A rocBLAS handle (also the one
//! miopenCreate makes) allocates a 32 MiB workspace for itself, which ends at a
//! 2 MiB block's end: on the simulated RX 5700 XT it gets the sink, as the
//! program's own 32 MiB `hipMalloc` does.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const MODES: [&str; 4] = ["hipsparse", "rocsparse", "hiprand", "rocrand"];
const MISSING: &str = "hipErrorNoBinaryForGpu: Unable to find code object for all current devices!";

/// target/debs/libs-`release`, fetched once.
fn fetched(release: &str) -> PathBuf {
    let out = Command::new(root().join("scripts/fetch-rocm-libs"))
        .args(["--quiet", release])
        .output()
        .expect("scripts/fetch-rocm-libs");
    assert!(
        out.status.success(),
        "fetch-rocm-libs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// target/debs/libs-5.2/root.
fn libs() -> PathBuf {
    fetched("5.2").join("root")
}

fn lib_dir() -> PathBuf {
    libs().join("usr/lib/x86_64-linux-gnu")
}

/// The client, built with the libraries' real headers (C++: rocRAND's headers
/// need `__half`) and linked against them and Debian's libamdhip64.so.5.
fn client() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let inc = libs().join("usr/include");
            let lib = lib_dir();
            let dir = root().join("target/test-programs");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("debian_libs-5.2");
            let tmp = dir.join(format!("debian_libs.{}.tmp", std::process::id()));
            let st = Command::new("g++")
                .env_remove("LD_LIBRARY_PATH")
                .args([
                    "-x",
                    "c++",
                    "-std=gnu++17",
                    "-O1",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                ])
                .arg("-D__HIP_PLATFORM_AMD__")
                .arg(format!("-I{}", root().join("include").display()))
                .arg(format!("-I{}", inc.display()))
                .arg("-o")
                .arg(&tmp)
                .arg(root().join("tests/programs/debian_libs.c"))
                .arg(format!("-L{}", lib.display()))
                .args(["-lhipsparse", "-lrocsparse", "-lhiprand", "-lrocrand"])
                .args(["-lamdhip64", "-ldl"])
                .arg(format!("-Wl,-rpath-link,{}", lib.display()))
                .output()
                .expect("g++");
            assert!(
                st.status.success(),
                "g++: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            std::fs::rename(&tmp, &out).unwrap();
            out
        })
        .clone()
}

/// The client on the simulated `gpu` of the 5.2 build, Debian's libraries
/// after the simulated runtime on the library path.
fn on_sim(gpu: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = clean_command(&client());
    for (k, v) in simgpu_env_for(gpu, "5.2") {
        let v = if k == "LD_LIBRARY_PATH" {
            format!("{v}:{}", lib_dir().display())
        } else {
            v
        };
        c.env(k, v);
    }
    c.args(args).envs(env.iter().copied());
    c
}

/// The sizes of the successful hipMalloc calls of a run, in order (from the
/// simulated runtime's call log).
fn malloc_sizes(mut c: Command, tag: &str) -> Vec<String> {
    let log = std::env::temp_dir().join(format!("debian-libs-{}-{tag}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let run = Run::from(c.env("SIMGPU_CALL_LOG", &log).output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    text.lines()
        .filter(|l| l.contains("\"fn\":\"hipMalloc\"") && l.ends_with("\"result\":0}"))
        .map(|l| {
            let at = l.find("\"size\":").expect("size") + 7;
            l[at..].split([',', '}']).next().unwrap().to_string()
        })
        .collect()
}

/// The client's own line of rocm-fix's counters while the library's handle
/// (or the program's allocations) are alive: "padded P padded_bytes B live L".
fn alive(run: &Run) -> String {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("debian_") && l.contains(" alive: "))
        .unwrap_or_else(|| panic!("no counters: {run:#?}"));
    line.split(" alive: ").nth(1).unwrap().to_string()
}

fn expected_stdout(mode: &str) -> &'static str {
    match mode {
        "hipsparse" => {
            "hipsparseCreate -> 0\nhipsparseGetVersion -> 0 version 200302\nhipsparseDestroy -> 0\n"
        }
        "rocsparse" => {
            "rocsparse_create_handle -> 0\nrocsparse_get_pointer_mode -> 0 mode 0\n\
             rocsparse_destroy_handle -> 0\n"
        }
        // The generator is created; generating launches rocRAND's kernels,
        // which the simulated device cannot run (hipErrorNoBinaryForGpu):
        // HIPRAND_STATUS_LAUNCH_FAILURE 201, ROCRAND_STATUS_LAUNCH_FAILURE 107.
        "hiprand" => {
            "hipMalloc -> 0\nhiprandCreateGenerator -> 0\nhiprandGenerate -> 201\n\
             hiprandDestroyGenerator -> 0\nhipFree -> 0\n"
        }
        "rocrand" => {
            "hipMalloc -> 0\nrocrand_create_generator -> 0\nrocrand_generate -> 107\n\
             rocrand_destroy_generator -> 0\nhipFree -> 0\n"
        }
        _ => unreachable!(),
    }
}

/// On `gpu` (+ `env`), each library's own allocations get from rocm-fix what
/// the same allocations made by the program get, and with ROCM_FIX_PAD=2M
/// that is padding for every one of them.
fn treated_as_the_applications(gpu: &str, env: &[(&str, &str)]) {
    let pad: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("ROCM_FIX_PAD", "2M"), ("ROCM_FIX_STATS", "1")])
        .collect();
    for mode in MODES {
        let sizes = malloc_sizes(on_sim(gpu, &[mode], env), mode);
        // The library's own: a rocSPARSE handle's buffer and constants, a
        // rocRAND XORWOW generator's engine states (after the program's 16 KiB).
        let own: &[&str] = if mode.ends_with("sparse") {
            &["1048576", "4", "8", "8", "16"]
        } else {
            &["16384", "3145728"]
        };
        assert_eq!(sizes, own, "{gpu} {mode}");
        let (without, with) = both(|| on_sim(gpu, &[mode], &pad), &[]);
        assert_eq!(without.code, Some(0), "{gpu} {mode}: {without:#?}");
        assert_eq!(without.stdout, expected_stdout(mode), "{gpu} {mode}");
        assert_eq!(with.stdout, without.stdout, "{gpu} {mode}: {with:#?}");
        assert_eq!(with.code, Some(0), "{gpu} {mode}: {with:#?}");
        let mut app = vec!["app"];
        app.extend(sizes.iter().map(String::as_str));
        let mut c = on_sim(gpu, &app, &pad);
        c.env("LD_PRELOAD", preload());
        let app = Run::from(c.output().unwrap());
        assert_eq!(app.code, Some(0), "{app:#?}");
        assert_eq!(
            alive(&with),
            alive(&app),
            "{gpu} {mode}: {with:#?} {app:#?}"
        );
        assert!(
            alive(&with).starts_with(&format!("padded {} ", sizes.len())),
            "{gpu} {mode}: every allocation padded: {with:#?}"
        );
    }
}

#[test]
fn debian_12s_libraries_allocations_are_treated_as_the_applications_on_a_simulated_rx_6900_xt() {
    treated_as_the_applications("gfx1030", &[]);
}

/// The RX 5700 XT owner's usual workaround, HSA_OVERRIDE_GFX_VERSION=10.3.0,
/// makes the GPU report gfx1030: the libraries load, and rocm-fix (which
/// reads the real chip) treats their allocations as the program's.
#[test]
fn on_a_simulated_rx_5700_xt_debian_12s_libraries_abort_at_start_unless_it_reports_gfx1030() {
    for mode in MODES {
        let (without, with) = both(|| on_sim("gfx1010", &[mode], &[]), &[]);
        for r in [&without, &with] {
            assert!(r.aborted(), "{mode}: {r:#?}");
            assert!(r.stderr.contains(MISSING), "{mode}: {r:#?}");
            assert_eq!(r.stdout, "", "{mode}: {r:#?}");
        }
    }
    treated_as_the_applications("gfx1010", &[("HSA_OVERRIDE_GFX_VERSION", "10.3.0")]);
}

/// A GPU rocm-fix leaves alone (a simulated RX 580, gfx803, which the
/// libraries carry code for): output byte-identical in `auto` (passthrough)
/// and `observe`, which counts every hooked call, the libraries' included.
#[test]
fn on_a_gpu_rocm_fix_leaves_alone_debian_12s_libraries_run_unchanged() {
    for mode in MODES {
        let log =
            std::env::temp_dir().join(format!("debian-libs-{}-803-{mode}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let mut c = on_sim("gfx803", &[mode], &[]);
        let without = Run::from(c.env("SIMGPU_CALL_LOG", &log).output().unwrap());
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let hooked = text
            .lines()
            .filter(|l| l.contains("\"fn\":\"hipMalloc\"") || l.contains("\"fn\":\"hipFree\""))
            .count();
        assert_eq!(without.code, Some(0), "{mode}: {without:#?}");
        assert_eq!(without.stdout, expected_stdout(mode), "{mode}");
        for (m, expect) in [
            ("auto", "rocm-fix: passthrough (mode auto".to_string()),
            // + the runtime's own hsa_init, which it calls through its PLT
            (
                "observe",
                format!(
                    "rocm-fix: intercepted {} rewritten 0 protected 0 ",
                    hooked + 1
                ),
            ),
        ] {
            let mut c = on_sim(
                "gfx803",
                &[mode],
                &[("ROCM_FIX_MODE", m), ("ROCM_FIX_STATS", "1")],
            );
            let with = Run::from(c.env("LD_PRELOAD", preload()).output().unwrap());
            assert_eq!(with.stdout, without.stdout, "{mode} {m}: {with:#?}");
            assert_eq!(with.code, without.code, "{mode} {m}");
            assert!(
                with.stderr.contains(&expect),
                "{mode} {m}: {expect}: {with:#?}"
            );
        }
    }
}

/// Debian's real ROCm 5.2 runtime of this machine: no GPU, so each library
/// fails in its own way, identically with the preload in `auto` and `observe`.
#[test]
fn debian_12s_libraries_on_debians_real_5_2_are_unchanged_by_the_preload() {
    let real = |mode: &str, env: &[(&str, &str)]| {
        let mut c = clean_command(&client());
        c.env("LD_LIBRARY_PATH", lib_dir())
            .arg(mode)
            .envs(env.iter().copied());
        Run::from(c.output().unwrap())
    };
    let ldd = Command::new("ldd")
        .arg(client())
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout).to_string();
    assert!(
        ldd.contains("libamdhip64.so.5 => /") && !ldd.contains("simgpu"),
        "Debian's runtime: {ldd}"
    );
    for mode in MODES {
        let without = real(mode, &[]);
        assert_eq!(without.code, Some(0), "{mode}: {without:#?}");
        assert!(without.stdout.lines().count() >= 3, "{mode}: {without:#?}");
        let pre = preload();
        let pre = pre.to_str().unwrap();
        for m in ["auto", "observe"] {
            let with = real(
                mode,
                &[
                    ("LD_PRELOAD", pre),
                    ("ROCM_FIX_MODE", m),
                    ("ROCM_FIX_STATS", "1"),
                ],
            );
            assert_eq!(with.stdout, without.stdout, "{mode} {m}: {with:#?}");
            assert_eq!(with.code, without.code, "{mode} {m}");
            assert!(with.stderr.contains("rocm-fix: "), "{mode} {m}: {with:#?}");
        }
    }
}

// ---- Debian sid's rocBLAS / hipBLAS (ROCm 6.4) ----

const BLAS_MODES: [&str; 3] = ["rocblas", "hipblas", "miopen"];
const GNU: &str = "usr/lib/x86_64-linux-gnu";

/// The rocBLAS/hipBLAS/MIOpen client, built (C++: MIOpen's header needs it)
/// with their real headers and those of
/// Debian's 6.4.3 libamdhip64-dev (target/debs/6.4, scripts/fetch-rocm-debs).
/// The sid libraries need glibc 2.38, which this machine's linker cannot
/// check: their undefined symbols are left to sid's loader.
fn blas_client() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let libs = fetched("6.4").join("root");
            let hip = root().join("target/debs/6.4/root");
            let dir = root().join("target/test-programs");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("debian_blas-6.4");
            let tmp = dir.join(format!("debian_blas.{}.tmp", std::process::id()));
            let st = Command::new("g++")
                .env_remove("LD_LIBRARY_PATH")
                .args([
                    "-x",
                    "c++",
                    "-std=gnu++17",
                    "-O1",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                ])
                .arg("-D__HIP_PLATFORM_AMD__")
                .arg(format!("-I{}", root().join("include").display()))
                .arg(format!("-I{}", libs.join("usr/include").display()))
                .arg(format!("-I{}", hip.join("usr/include").display()))
                .arg("-o")
                .arg(&tmp)
                .arg(root().join("tests/programs/debian_blas.c"))
                .arg(format!("-L{}", libs.join(GNU).display()))
                .args(["-lMIOpen", "-lhipblas", "-lrocblas"])
                .arg(format!("-L{}", hip.join(GNU).display()))
                .args(["-lamdhip64", "-ldl"])
                .arg(format!("-Wl,-rpath-link,{}", libs.join(GNU).display()))
                .arg("-Wl,--unresolved-symbols=ignore-in-shared-libs")
                .output()
                .expect("g++");
            assert!(
                st.status.success(),
                "g++: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            std::fs::rename(&tmp, &out).unwrap();
            out
        })
        .clone()
}

/// The client on the simulated `gpu` of the 6.4 build, run by sid's loader:
/// the simulated runtime first, then the sid libraries, then sid's C runtime.
fn on_sim64(gpu: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let dir = fetched("6.4");
    let sidlibc = dir.join("sidlibc").join(GNU);
    let mut c = clean_command(&sidlibc.join("ld-linux-x86-64.so.2"));
    let mut path = String::new();
    for (k, v) in simgpu_env_for(gpu, "6.4") {
        if k == "LD_LIBRARY_PATH" {
            path = v;
        } else {
            c.env(k, v);
        }
    }
    let path = format!(
        "{path}:{}:{}",
        dir.join("root").join(GNU).display(),
        sidlibc.display()
    );
    c.arg("--library-path").arg(path).arg(blas_client());
    c.args(args).envs(env.iter().copied());
    c
}

fn blas_stdout(mode: &str) -> &'static str {
    // sdot launches rocBLAS's kernel, which the simulated device cannot run
    // (hipErrorNoBinaryForGpu): rocblas_status_arch_mismatch (15), which
    // hipBLAS passes on as HIPBLAS_STATUS_UNKNOWN (11).
    match mode {
        "rocblas" => {
            "hipMalloc -> 0\nrocblas_create_handle -> 0\n\
             rocblas_get_device_memory_size -> 0 size 33554432\n\
             rocblas_is_managing_device_memory -> 1\nrocblas_sdot -> 15\n\
             rocblas_destroy_handle -> 0\nhipFree -> 0\n"
        }
        "hipblas" => {
            "hipMalloc -> 0\nhipblasCreate -> 0\nhipblasSdot -> 11\nhipblasDestroy -> 0\nhipFree -> 0\n"
        }
        "miopen" => {
            "miopenGetVersion -> 0 3.4.0\nmiopenCreate -> 0\nmiopenGetStream -> 0\nmiopenDestroy -> 0\n"
        }
        _ => unreachable!(),
    }
}

#[test]
fn debian_sids_rocblas_workspace_gets_the_sink_as_the_applications_on_a_simulated_rx_5700_xt() {
    for mode in BLAS_MODES {
        let sizes = malloc_sizes(on_sim64("gfx1010", &[mode], &[]), mode);
        // The program's 4 KiB, then the handle's own workspace (MIOpen's
        // handle creates a rocBLAS handle of its own).
        let own: &[&str] = if mode == "miopen" {
            &["33554432"]
        } else {
            &["4096", "33554432"]
        };
        assert_eq!(sizes, own, "{mode}");
        let stats = [("ROCM_FIX_STATS", "1")];
        let (without, with) = both(|| on_sim64("gfx1010", &[mode], &stats), &[]);
        assert_eq!(without.code, Some(0), "{mode}: {without:#?}");
        assert_eq!(without.stdout, blas_stdout(mode), "{mode}");
        assert_eq!(with.stdout, without.stdout, "{mode}: {with:#?}");
        assert_eq!(with.code, Some(0), "{mode}: {with:#?}");
        let mut app = vec!["app"];
        app.extend(sizes.iter().map(String::as_str));
        let mut c = on_sim64("gfx1010", &app, &stats);
        let app = Run::from(c.env("LD_PRELOAD", preload()).output().unwrap());
        assert_eq!(app.code, Some(0), "{app:#?}");
        assert_eq!(alive(&with), alive(&app), "{mode}: {with:#?} {app:#?}");
        // The workspace ends at its block's end: the sink (one per GPU, 64 KiB).
        assert!(
            alive(&with).starts_with("padded 1 padded_bytes 65536 "),
            "{mode}: {with:#?}"
        );
    }
    // ROCBLAS_STREAM_ORDER_ALLOC=1: the workspace comes from hipMallocAsync
    // (and goes back with hipFreeAsync), which gets the sink too.
    let env = [("ROCBLAS_STREAM_ORDER_ALLOC", "1"), ("ROCM_FIX_STATS", "1")];
    let (without, with) = both(|| on_sim64("gfx1010", &["rocblas"], &env), &[]);
    assert_eq!(with.stdout, without.stdout, "{with:#?}");
    assert_eq!(with.stdout, blas_stdout("rocblas"), "{with:#?}");
    assert!(alive(&with).starts_with("padded 1 "), "{with:#?}");
}

/// A GPU rocm-fix leaves alone (a simulated RX 7900 XTX, gfx1100, which sid's
/// rocBLAS carries code for): byte-identical in `auto` and `observe`.
#[test]
fn on_a_gpu_rocm_fix_leaves_alone_debian_sids_rocblas_runs_unchanged() {
    for mode in BLAS_MODES {
        let log = std::env::temp_dir().join(format!(
            "debian-blas-{}-1100-{mode}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let mut c = on_sim64("gfx1100", &[mode], &[]);
        let without = Run::from(c.env("SIMGPU_CALL_LOG", &log).output().unwrap());
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let hooked = text
            .lines()
            .filter(|l| l.contains("\"fn\":\"hipMalloc\"") || l.contains("\"fn\":\"hipFree\""))
            .count();
        assert_eq!(without.code, Some(0), "{mode}: {without:#?}");
        assert_eq!(without.stdout, blas_stdout(mode), "{mode}");
        for (m, expect) in [
            ("auto", "rocm-fix: passthrough (mode auto".to_string()),
            (
                "observe",
                format!(
                    "rocm-fix: intercepted {} rewritten 0 protected 0 ",
                    hooked + 1
                ),
            ),
        ] {
            let env = [("ROCM_FIX_MODE", m), ("ROCM_FIX_STATS", "1")];
            let mut c = on_sim64("gfx1100", &[mode], &env);
            let with = Run::from(c.env("LD_PRELOAD", preload()).output().unwrap());
            assert_eq!(with.stdout, without.stdout, "{mode} {m}: {with:#?}");
            assert_eq!(with.code, without.code, "{mode} {m}");
            assert!(
                with.stderr.contains(&expect),
                "{mode} {m}: {expect}: {with:#?}"
            );
        }
    }
}
