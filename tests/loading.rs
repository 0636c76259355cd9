//! How HIP gets loaded (issue 11), on the simulated .so.6 and .so.7, in
//! Debian's builds and in AMD's (6.4-amd, 7.2-amd: libamdhip64 links
//! rocprofiler-register and its exported functions dispatch through the API
//! table it hands over; tests/simgpu/hip_table.c): linked, dlopen RTLD_LOCAL /
//! RTLD_GLOBAL / RTLD_DEEPBIND, dlvsym, hipGetProcAddress with each flag and
//! version, two copies of the runtime in one process (a private one in a
//! torch/lib-like folder, found through RPATH $ORIGIN or opened by path), a
//! TheRock-style package that preloads its runtime with RTLD_GLOBAL, and a
//! profiler the user runs (a rocprofv3 stand-in, before or after rocm-fix).
//! For each: whether rocm-fix saw the call (its C API: an allocation on the
//! simulated RX 5700 XT is padded once), which copy ran it (each copy logs to
//! its own SIMGPU_CALL_LOG), and that it ran exactly once, the same copy as
//! without the preload (tests/programs/loading.c).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Built {
    linked: PathBuf,
    plain: PathBuf,
    torchlib: PathBuf,
}

fn gcc(args: &[&std::ffi::OsStr]) {
    let o = Command::new("gcc")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .args(args)
        .output()
        .expect("gcc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The programs and the torch/lib-like folder for simulated `version`.
fn build(version: &str) -> Built {
    let lib = simgpu_lib_for(version);
    let major = &version[..1];
    let dir = root().join(format!("target/test-programs/loading-{version}"));
    let torchlib = dir.join("torchlib");
    std::fs::create_dir_all(&torchlib).unwrap();
    let so = format!("libamdhip64.so.{major}");
    std::fs::copy(lib.join(&so), torchlib.join(&so)).unwrap();
    // AMD's builds: the wheel's runtime finds its rocprofiler-register
    // through RUNPATH $ORIGIN.
    let register = lib.join("librocprofiler-register.so.0");
    if register.exists() {
        std::fs::copy(&register, torchlib.join("librocprofiler-register.so.0")).unwrap();
    }
    let src = |n: &str| root().join("tests/programs").join(n).into_os_string();
    let s = |x: &str| std::ffi::OsString::from(x);
    let fw = torchlib.join("libloading_fw.so").into_os_string();
    gcc(&[
        &s("-shared"),
        &s("-fPIC"),
        &s("-o"),
        &fw,
        &src("loading_fw.c"),
        &s("-L"),
        torchlib.as_os_str(),
        &s(&format!("-l:{so}")),
        &s("-Wl,-rpath,$ORIGIN"),
    ]);
    let include = root().join("include").into_os_string();
    let linked = dir.join("loading-linked");
    let plain = dir.join("loading-plain");
    gcc(&[
        &s("-std=gnu11"),
        &s("-Wall"),
        &s("-Werror"),
        &s("-DLINKED"),
        &s("-I"),
        &include,
        &s("-o"),
        linked.as_os_str(),
        &src("loading.c"),
        &s("-L"),
        lib.as_os_str(),
        &s("-lamdhip64"),
        &s("-lhsa-runtime64"),
        &s("-ldl"),
    ]);
    gcc(&[
        &s("-std=gnu11"),
        &s("-Wall"),
        &s("-Werror"),
        &s("-I"),
        &include,
        &s("-o"),
        plain.as_os_str(),
        &src("loading.c"),
        &s("-ldl"),
    ]);
    Built {
        linked,
        plain,
        torchlib,
    }
}

/// hipMalloc lines of a call log.
fn mallocs(log: &Path) -> usize {
    call_log(log)
        .iter()
        .filter(|l| l.contains("\"fn\":\"hipMalloc\""))
        .count()
}

/// One run of `mode` with `preloads` (in LD_PRELOAD order) and `env`:
/// (the run, [system, private] hipMalloc counts).
fn run_once(
    b: &Built,
    version: &str,
    mode: &str,
    tag: &str,
    preloads: &[&Path],
    env: &[(&str, &Path)],
) -> (Run, [usize; 2]) {
    let prog = if ["linked", "free", "twocopies", "dlvdefault"].contains(&mode) {
        &b.linked
    } else {
        &b.plain
    };
    let dir = tmpdir(&format!("loading-{version}-{mode}-{tag}"));
    let (sys, private) = (dir.join("sys"), dir.join("priv"));
    let mut c = clean_command(prog);
    for (k, v) in simgpu_env_for("gfx1010", version) {
        c.env(k, v);
    }
    // rocprofiler-register's settings: only what a test sets.
    for k in [
        "ROCP_TOOL_LIBRARIES",
        "ROCPROFILER_REGISTER_LIBRARY",
        "ROCPROFILER_REGISTER_FORCE_LOAD",
        "ROCPROFILER_REGISTER_ENABLED",
    ] {
        c.env_remove(k);
    }
    c.env("HIP_SOVERSION", &version[..1])
        .env("LOG_SYS", &sys)
        .env("LOG_PRIV", &private)
        .args([mode.as_ref(), b.torchlib.as_os_str()]);
    if !preloads.is_empty() {
        let list: Vec<&str> = preloads.iter().map(|p| p.to_str().unwrap()).collect();
        c.env("LD_PRELOAD", list.join(":"));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let r = Run::from(c.output().unwrap());
    let counts = [mallocs(&sys), mallocs(&private)];
    (r, counts)
}

/// Runs `mode` without and with the preload; returns (stdout with the preload,
/// [system, private] hipMalloc counts), after checking that both runs made
/// the same calls on the same copies and succeeded.
fn run(b: &Built, version: &str, mode: &str) -> (String, [usize; 2]) {
    let preload = preload();
    let mut counts = Vec::new();
    let mut outs = Vec::new();
    for (tag, preloads) in [("off", &[][..]), ("on", &[preload.as_path()][..])] {
        let (r, c) = run_once(b, version, mode, tag, preloads, &[]);
        assert_eq!(r.code, Some(0), "{mode} on {version}: {r:#?}");
        counts.push(c);
        outs.push(r.stdout);
    }
    assert_eq!(
        counts[0], counts[1],
        "{mode} on {version}: the same copies ran the same calls with and without the preload"
    );
    assert!(
        !outs[0].contains("padded +1"),
        "without the preload nothing is padded: {}",
        outs[0]
    );
    (outs.pop().unwrap(), counts[1])
}

fn assert_lines(out: &str, expected: &[&str]) {
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, expected);
}

/// Built once per version for all tests of this process (they run in
/// parallel). Debian's builds (6.4, 7.2) and AMD's (6.4-amd, 7.2-amd: the
/// exported hipMalloc and hipFree dispatch through the API table handed to
/// rocprofiler-register, no tool present): the same answers, so our hooks
/// forwarding to an exported function that dispatches through the table do
/// not make anything run twice.
fn each_version(f: impl Fn(&Built, &str)) {
    static BUILT: std::sync::Mutex<Vec<(&str, &'static Built)>> = std::sync::Mutex::new(Vec::new());
    for v in ["6.4", "7.2", "6.4-amd", "7.2-amd"] {
        let b = {
            let mut built = BUILT.lock().unwrap();
            match built.iter().find(|(k, _)| *k == v) {
                Some((_, b)) => *b,
                None => {
                    let b: &'static Built = Box::leak(Box::new(build(v)));
                    built.push((v, b));
                    b
                }
            }
        };
        f(b, v);
    }
}

#[test]
fn linked_and_dlopen_local_global_clients_are_seen_once_on_their_copy() {
    each_version(|b, v| {
        for (mode, line) in [
            ("linked", "linked: hipMalloc -> 0 padded +1"),
            ("local", "local: hipMalloc -> 0 padded +1"),
            ("global", "global: hipMalloc -> 0 padded +1"),
        ] {
            let (out, counts) = run(b, v, mode);
            assert_lines(&out, &[line]);
            assert_eq!(
                counts,
                [1, 0],
                "{mode} on {v}: one call, on the system copy"
            );
        }
    });
}

/// hipFree of a padded allocation, through the PLT (on AMD's builds through
/// the table entry rocm-fix took over): the allocation leaves rocm-fix's
/// books, and each call ran once on the runtime.
#[test]
fn a_padded_allocation_is_freed_once_and_leaves_the_books() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "free");
        assert_lines(
            &out,
            &[
                "free: hipMalloc -> 0 padded +1",
                "free: hipFree -> 0, tracked 1 -> 0",
            ],
        );
        assert_eq!(counts, [1, 0], "free on {v}");
    });
}

/// RTLD_DEEPBIND: a dlsym client is still seen (it calls our dlsym), but a
/// library opened with RTLD_DEEPBIND binds its own PLT to the runtime in its
/// own scope first, before any preload. On Debian's builds that call goes
/// straight to the runtime, unseen, once. On AMD's builds the exported
/// function dispatches through the API table, whose entry rocm-fix took over
/// (src/preload/src/apitable.rs): seen, once.
#[test]
fn rtld_deepbind_libraries_are_seen_through_the_api_table_on_amd_builds_only() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "deepbind");
        let framework = if v.ends_with("-amd") { 1 } else { 0 };
        assert_lines(
            &out,
            &[
                "deepbind dlsym: hipMalloc -> 0 padded +1",
                &format!("deepbind framework: hipMalloc -> 0 padded +{framework}"),
            ],
        );
        assert_eq!(counts, [2, 0], "deepbind on {v}");
    });
}

/// dlvsym(handle, "hipMalloc", "hip_4.2") searches the runtime's own scope,
/// past any preload; the front's dlvsym hook hands back its hook for the
/// function its hooks forward to: seen, once, on the system copy. A version
/// the runtime lacks still finds nothing, and a function rocm-fix does not
/// hook is the runtime's own.
#[test]
fn dlvsym_clients_are_seen_once() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "dlvsym");
        assert_lines(
            &out,
            &[
                "dlvsym: hipMalloc -> 0 padded +1",
                "dlvsym hip_0.0: null",
                "dlvsym hipGetDeviceCount: the runtime's",
            ],
        );
        assert_eq!(counts, [1, 0], "dlvsym on {v}");
    });
}

/// dlvsym(RTLD_DEFAULT or RTLD_NEXT, "hipMalloc", "hip_4.2") from the
/// executable: glibc's versioned lookup passes over the front's unversioned
/// hook, so the front's dlvsym answers with its hook where the front comes
/// first: seen, once (before the fix: the runtime's own function, unseen).
#[test]
fn dlvsym_default_and_next_from_the_executable_are_seen_once() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "dlvdefault");
        assert_lines(
            &out,
            &[
                "dlvsym RTLD_DEFAULT: hipMalloc -> 0 padded +1",
                "dlvsym RTLD_NEXT: hipMalloc -> 0 padded +1",
                "dlvsym RTLD_DEFAULT hip_0.0: null",
            ],
        );
        assert_eq!(counts, [2, 0], "dlvdefault on {v}");
    });
}

/// RTLD_NEXT means "after the caller": a wrapper of the user's preloaded
/// after rocm-fix that forwards with dlvsym(RTLD_NEXT, …) gets the runtime's
/// function, not rocm-fix's hook (which would call the wrapper again): the
/// call goes application → rocm-fix → wrapper → runtime, once.
#[test]
fn a_wrapper_after_rocm_fix_forwarding_with_dlvsym_rtld_next_reaches_the_runtime() {
    let wrapper = program_with("next_wrapper", &["-shared"]);
    let fix = preload();
    each_version(|b, v| {
        let (r, counts) = run_once(
            b,
            v,
            "linked",
            "wrapper",
            &[fix.as_path(), wrapper.as_path()],
            &[],
        );
        assert_eq!(r.code, Some(0), "{v}: {r:#?}");
        assert_lines(&r.stdout, &["linked: hipMalloc -> 0 padded +1"]);
        assert_eq!(r.stderr, "next_wrapper: hipMalloc -> 0\n", "{v}");
        assert_eq!(counts, [1, 0], "{v}");
    });
}

#[test]
fn hip_get_proc_address_with_each_flag_and_version_is_seen_once() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "getproc");
        let mut expected = Vec::new();
        for ver in [0, 600, 602, 700] {
            for flag in [0, 1, 2] {
                expected.push(format!(
                    "getproc {ver}/{flag} (0, status 0): hipMalloc -> 0 padded +1"
                ));
            }
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_lines(&out, &expected);
        assert_eq!(counts, [12, 0], "getproc on {v}");
    });
}

/// Two runtimes in one process: the system copy (linked) and a private copy
/// in a torch/lib-like folder opened by path. Calls bound to the system copy
/// are seen; a call through dlsym or dlvsym on the private copy's own handle
/// runs on the private copy, unseen (the hooks forward to the copy the global
/// scope finds, so handing it our hook would move it to the other copy); the
/// framework's DT_NEEDED resolves by soname to the copy loaded first, with
/// or without the preload.
#[test]
fn two_runtimes_in_one_process_each_call_runs_once_on_the_copy_it_was_bound_to() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "twocopies");
        assert_lines(
            &out,
            &[
                "system copy (linked): hipMalloc -> 0 padded +1",
                "two copies: yes",
                "private copy (dlsym on its handle): hipMalloc -> 0 padded +0",
                "private copy (dlvsym on its handle): hipMalloc -> 0 padded +0",
                "framework (RPATH $ORIGIN): hipMalloc -> 0 padded +1",
            ],
        );
        assert_eq!(counts, [2, 2], "twocopies on {v}");
    });
}

#[test]
fn a_therock_style_rtld_global_preload_of_a_private_runtime_is_seen_on_that_copy() {
    each_version(|b, v| {
        let (out, counts) = run(b, v, "therock");
        assert_lines(&out, &["therock framework: hipMalloc -> 0 padded +1"]);
        assert_eq!(counts, [0, 1], "therock on {v}");
    });
}

// ---- AMD's builds: the API table and a profiler the user runs -------------------

/// The profiler stand-in (tests/programs/profiler_stub.c): rocprofv3's two
/// preloads, and the tool library alone (no SDK anywhere).
struct Profiler {
    tool: PathBuf,
    sdk: PathBuf,
    tool_alone: PathBuf,
}

fn profiler() -> &'static Profiler {
    static BUILT: std::sync::OnceLock<Profiler> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = root().join("target/test-programs/profiler");
        let alone = dir.join("alone");
        std::fs::create_dir_all(&alone).unwrap();
        let src = root()
            .join("tests/programs/profiler_stub.c")
            .into_os_string();
        let s = |x: &str| std::ffi::OsString::from(x);
        let p = Profiler {
            tool: dir.join("librocprofiler-sdk-tool.so"),
            sdk: dir.join("librocprofiler-sdk.so"),
            tool_alone: alone.join("librocprofiler-sdk-tool.so"),
        };
        let common = [s("-shared"), s("-fPIC"), s("-Wall"), s("-Werror")];
        let build = |out: &Path, extra: &[std::ffi::OsString]| {
            let mut args: Vec<&std::ffi::OsStr> = common.iter().map(|a| a.as_os_str()).collect();
            args.push(std::ffi::OsStr::new("-o"));
            args.push(out.as_os_str());
            args.push(&src);
            args.extend(extra.iter().map(|a| a.as_os_str()));
            gcc(&args);
        };
        build(&p.sdk, &[s("-DSDK")]);
        // The real tool links the SDK (its rocprofiler_set_api_table).
        build(
            &p.tool,
            &[
                s("-DTOOL"),
                s("-L"),
                dir.clone().into_os_string(),
                s("-l:librocprofiler-sdk.so"),
                s(&format!("-Wl,-rpath,{}", dir.display())),
            ],
        );
        build(&p.tool_alone, &[s("-DTOOL")]);
        p
    })
}

/// AMD's builds hand each runtime copy's API table to the profiler through
/// rocprofiler-register (instance 0: the system copy, 1: the private copy
/// registered with the same rocprofiler-register), and every call reaches the
/// profiler through the table whatever bound it. With rocm-fix preloaded
/// before the profiler's libraries (LD_PRELOAD=librocm_fix.so rocprofv3 …)
/// or after them (/etc/ld.so.preload comes after LD_PRELOAD): the profiler
/// gets the same tables and the same calls, rocm-fix pads what it pads
/// without the profiler, and each copy runs each call once.
#[test]
fn amd_builds_hand_each_copy_s_table_to_a_profiler_and_rocm_fix_leaves_it_whole() {
    let prof = profiler();
    let fix = preload();
    each_version(|b, v| {
        let Some(release) = v.strip_suffix("-amd") else {
            return;
        };
        // HIP_ROCP_REG_VERSION: 10000 * major + 100 * minor (tests/simgpu/hip_table.c).
        let (major, minor) = release.split_once('.').unwrap();
        let version = major.parse::<u32>().unwrap() * 10000 + minor.parse::<u32>().unwrap() * 100;
        let mut logs = Vec::new();
        for (tag, preloads) in [
            ("prof", vec![prof.tool.as_path(), prof.sdk.as_path()]),
            (
                "fix-first",
                vec![fix.as_path(), prof.tool.as_path(), prof.sdk.as_path()],
            ),
            (
                "fix-last",
                vec![prof.tool.as_path(), prof.sdk.as_path(), fix.as_path()],
            ),
        ] {
            let log = tmpdir(&format!("profiler-{v}-{tag}")).join("profiler.log");
            let (r, counts) = run_once(
                b,
                v,
                "twocopies",
                tag,
                &preloads,
                &[("PROFILER_LOG", log.as_path())],
            );
            assert_eq!(r.code, Some(0), "{tag} on {v}: {r:#?}");
            let padded = if tag == "prof" { 0 } else { 1 };
            assert_lines(
                &r.stdout,
                &[
                    &format!("system copy (linked): hipMalloc -> 0 padded +{padded}"),
                    "two copies: yes",
                    "private copy (dlsym on its handle): hipMalloc -> 0 padded +0",
                    "private copy (dlvsym on its handle): hipMalloc -> 0 padded +0",
                    &format!("framework (RPATH $ORIGIN): hipMalloc -> 0 padded +{padded}"),
                ],
            );
            assert_eq!(counts, [2, 2], "{tag} on {v}: each call once on its copy");
            logs.push(call_log(&log));
        }
        assert_eq!(
            logs[0],
            [
                format!("profiler: table hip version {version} instance 0"),
                "profiler: hipMalloc instance 0".into(),
                format!("profiler: table hip version {version} instance 1"),
                "profiler: hipMalloc instance 1".into(),
                "profiler: hipMalloc instance 1".into(),
                "profiler: hipMalloc instance 0".into(),
            ],
            "{v}"
        );
        assert_eq!(logs[1], logs[0], "{v}: rocm-fix first");
        assert_eq!(logs[2], logs[0], "{v}: rocm-fix last");
    });
}

/// With a profiler too (rocm-fix first: it takes the table over and passes
/// it on): the profiler and rocm-fix each see both calls, the one of a
/// library opened with RTLD_DEEPBIND included, and each runs once.
#[test]
fn on_amd_builds_a_deepbind_library_s_call_reaches_the_profiler_and_rocm_fix_once() {
    let prof = profiler();
    let fix = preload();
    each_version(|b, v| {
        if !v.ends_with("-amd") {
            return;
        }
        let log = tmpdir(&format!("profiler-deepbind-{v}")).join("profiler.log");
        let (r, counts) = run_once(
            b,
            v,
            "deepbind",
            "prof",
            &[fix.as_path(), prof.tool.as_path(), prof.sdk.as_path()],
            &[("PROFILER_LOG", log.as_path())],
        );
        assert_eq!(r.code, Some(0), "{v}: {r:#?}");
        assert_lines(
            &r.stdout,
            &[
                "deepbind dlsym: hipMalloc -> 0 padded +1",
                "deepbind framework: hipMalloc -> 0 padded +1",
            ],
        );
        assert_eq!(counts, [2, 0], "{v}");
        let calls = call_log(&log)
            .iter()
            .filter(|l| l.as_str() == "profiler: hipMalloc instance 0")
            .count();
        assert_eq!(calls, 2, "{v}: both calls went through the table");
    });
}

/// Why a preload cannot simply declare itself a tool: rocprofiler-register
/// takes a visible `rocprofiler_configure` for a tool, and a tool without a
/// `rocprofiler_set_api_table` anywhere (no SDK installed) is fatal on AMD's
/// builds; Debian's builds never look.
#[test]
fn a_tool_symbol_without_a_table_receiver_aborts_on_amd_builds_only() {
    let prof = profiler();
    each_version(|b, v| {
        let (r, counts) = run_once(b, v, "linked", "alone", &[prof.tool_alone.as_path()], &[]);
        if v.ends_with("-amd") {
            assert_eq!(r.signal, Some(libc::SIGABRT), "{v}: {r:#?}");
            assert!(
                r.stderr.contains("rocprofiler_set_api_table not found"),
                "{v}: {}",
                r.stderr
            );
            assert_eq!(counts, [0, 0], "{v}");
        } else {
            assert_eq!(r.code, Some(0), "{v}: {r:#?}");
            assert_eq!(counts, [1, 0], "{v}");
        }
    });
}

/// rocm-fix's receiver as rocprofiler-register calls it: no profiler, every
/// library's table is "not taken" (non-zero), so ROCr's LoadTools still loads
/// the HSA_TOOLS_LIB tools as without rocm-fix; a table that is not the HIP
/// runtime's copy is left alone; with a profiler's receiver loaded, every
/// answer is the profiler's.
#[test]
fn the_receiver_takes_only_the_hip_table_and_answers_as_the_profiler_would() {
    let prog = program("receiver");
    let prof = profiler();
    let fix = preload();
    let mut outs = Vec::new();
    for (preloads, register_library) in [
        (vec![], None),
        (vec![fix.as_path()], None),
        (
            vec![fix.as_path(), prof.tool.as_path(), prof.sdk.as_path()],
            None,
        ),
        // Not loaded, but named (ROCPROFILER_REGISTER_LIBRARY): loaded as
        // rocprofiler-register would load it.
        (vec![fix.as_path()], Some(prof.sdk.as_path())),
    ] {
        let mut c = clean_command(&prog);
        c.env_remove("ROCP_TOOL_LIBRARIES")
            .env_remove("ROCPROFILER_REGISTER_FORCE_LOAD")
            .env_remove("ROCPROFILER_REGISTER_LIBRARY");
        if let Some(lib) = register_library {
            c.env("ROCPROFILER_REGISTER_LIBRARY", lib);
        }
        if !preloads.is_empty() {
            let list: Vec<&str> = preloads.iter().map(|p| p.to_str().unwrap()).collect();
            c.env("LD_PRELOAD", list.join(":"));
        }
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, Some(0), "{r:#?}");
        outs.push(r.stdout);
    }
    assert_eq!(outs[0], "no receiver\n");
    assert_lines(
        &outs[1],
        &[
            "configure: NULL",
            "hsa: 1",
            "hip: 0",
            "hip_compiler: 0",
            "roctx: 0",
            "rccl: 0",
            "rocdecode: 1",
            "table untouched: yes",
        ],
    );
    let with_profiler = [
        "configure: NULL",
        "hsa: 0",
        "hip: 0",
        "hip_compiler: 0",
        "roctx: 0",
        "rccl: 0",
        "rocdecode: 0",
        "table untouched: yes",
    ];
    assert_lines(&outs[2], &with_profiler);
    assert_lines(&outs[3], &with_profiler);
}

// ---- two rocm-fix fronts, and the API-table route's race ------------------------

/// Two different librocm_fix.so files preloaded (a distro package's in
/// /etc/ld.so.preload and another install's in LD_PRELOAD): the first in the
/// scope handles every call, the second stays inert and forwards unchanged,
/// so each call is handled once: the runtime gets the same calls with the
/// same sizes as with one front. Before the fix, on AMD's builds the two
/// receivers passed the table to each other until the stack overflowed, and
/// on Debian's builds both engines handled each call.
#[test]
fn a_second_rocm_fix_front_stays_inert_and_each_call_is_handled_once() {
    let fix = preload();
    let copy = tmpdir("second-front");
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(fix.parent().unwrap().join(f), copy.join(f)).unwrap();
    }
    let second = copy.join("librocm_fix.so");
    each_version(|b, v| {
        let mut logs = Vec::new();
        for (tag, preloads) in [
            ("one", vec![fix.as_path()]),
            ("two", vec![fix.as_path(), second.as_path()]),
            ("two-swapped", vec![second.as_path(), fix.as_path()]),
        ] {
            let (r, counts) = run_once(b, v, "free", tag, &preloads, &[]);
            assert_eq!(r.code, Some(0), "{tag} on {v}: {r:#?}");
            assert_lines(
                &r.stdout,
                &[
                    "free: hipMalloc -> 0 padded +1",
                    "free: hipFree -> 0, tracked 1 -> 0",
                ],
            );
            assert_eq!(counts, [1, 0], "{tag} on {v}");
            let dir = std::env::temp_dir().join(format!(
                "rocm-fix-test-loading-{v}-free-{tag}-{}",
                std::process::id()
            ));
            logs.push(masked_log(&dir.join("sys")));
        }
        assert!(
            logs[0].iter().any(|l| l.contains("hipMalloc")),
            "{v}: {:?}",
            logs[0]
        );
        assert_eq!(
            logs[1], logs[0],
            "{v}: two fronts, the runtime's calls as with one"
        );
        assert_eq!(logs[2], logs[0], "{v}: the other order");
    });
}

/// The same with a profiler (rocprofv3's preloads) after both fronts: the
/// profiler still receives each table, once.
#[test]
fn two_fronts_and_a_profiler_on_amd_builds_the_profiler_gets_each_table_once() {
    let prof = profiler();
    let fix = preload();
    let copy = tmpdir("second-front-prof");
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(fix.parent().unwrap().join(f), copy.join(f)).unwrap();
    }
    let second = copy.join("librocm_fix.so");
    each_version(|b, v| {
        if !v.ends_with("-amd") {
            return;
        }
        let log = tmpdir(&format!("profiler-two-fronts-{v}")).join("profiler.log");
        let (r, counts) = run_once(
            b,
            v,
            "linked",
            "two-fronts-prof",
            &[
                fix.as_path(),
                second.as_path(),
                prof.tool.as_path(),
                prof.sdk.as_path(),
            ],
            &[("PROFILER_LOG", log.as_path())],
        );
        assert_eq!(r.code, Some(0), "{v}: {r:#?}");
        assert_lines(&r.stdout, &["linked: hipMalloc -> 0 padded +1"]);
        assert_eq!(counts, [1, 0], "{v}");
        let tables = call_log(&log)
            .iter()
            .filter(|l| l.starts_with("profiler: table hip"))
            .count();
        assert_eq!(tables, 1, "{v}: {:?}", call_log(&log));
    });
}

/// Thread A's first HIP call makes the runtime hand its table to rocm-fix's
/// receiver, which takes entries over (slowed down by a dladdr that sleeps);
/// meanwhile thread B's first hipMalloc loads the engine. B waits until the
/// takeover is done, and every call runs once (tests/programs/table_race.c).
/// Before the fix B's engine could keep the exported hipMalloc as its real
/// function: hipMalloc recursed through the table until SIGSEGV.
/// `prog` built against AMD's build `v` with libslow_dladdr.so (a dladdr
/// that sleeps on the thread that called slow_mark), in a folder of its own;
/// and a command that runs it on the simulated gfx1010, logging the runtime's
/// calls to `log`, with that folder on the library path.
fn slowed_program(v: &str, prog: &str, log: &Path) -> (PathBuf, impl Fn(Option<&Path>) -> Command) {
    let lib = simgpu_lib_for(v);
    let dir = root().join(format!("target/test-programs/{prog}-{v}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = |n: &str| root().join("tests/programs").join(n).into_os_string();
    let s = |x: &str| std::ffi::OsString::from(x);
    let map = format!(
        "-Wl,--version-script={}",
        root().join("tests/programs/slow_dladdr.map").display()
    );
    let slow = dir.join("libslow_dladdr.so");
    gcc(&[
        &s("-shared"),
        &s("-fPIC"),
        &s("-o"),
        slow.as_os_str(),
        &src("slow_dladdr.c"),
        &s(&map),
        &s("-ldl"),
    ]);
    let exe = dir.join(prog);
    let so = format!("-l:libamdhip64.so.{}", &v[..1]);
    gcc(&[
        &s("-o"),
        exe.as_os_str(),
        &src(&format!("{prog}.c")),
        &s("-Wl,--no-as-needed"),
        &s("-L"),
        dir.as_os_str(),
        &s("-lslow_dladdr"),
        &s("-L"),
        lib.as_os_str(),
        &s(&so),
        &s("-lpthread"),
        &s("-ldl"),
    ]);
    let (v, log, folder) = (v.to_string(), log.to_path_buf(), dir.clone());
    let cmd = move |preload: Option<&Path>| {
        let mut c = clean_command(&exe);
        for (k, val) in simgpu_env_for("gfx1010", &v) {
            c.env(k, val);
        }
        let _ = std::fs::remove_file(&log);
        c.env("SIMGPU_CALL_LOG", &log);
        let path = format!(
            "{}:{}",
            folder.display(),
            c.get_envs()
                .find(|(k, _)| *k == "LD_LIBRARY_PATH")
                .and_then(|(_, v)| v)
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        c.env("LD_LIBRARY_PATH", path);
        if let Some(p) = preload {
            c.env("LD_PRELOAD", p);
        }
        c
    };
    (dir, cmd)
}

#[test]
fn a_table_takeover_racing_the_engine_s_load_neither_loops_nor_deadlocks() {
    let fix = preload();
    for v in ["6.4-amd", "7.2-amd"] {
        let log = tmpdir(&format!("table-race-{v}")).join("calls");
        let (_, cmd) = slowed_program(v, "table_race", &log);
        for preload in [None, Some(fix.as_path())] {
            let c = cmd(preload);
            let (r, killed) = run_with_timeout(c, std::time::Duration::from_secs(60));
            assert!(!killed, "{v}: deadlock: {r:#?}");
            assert_eq!(r.code, Some(0), "{v} preload {preload:?}: {r:#?}");
            let mut lines: Vec<&str> = r.stdout.lines().collect();
            lines.sort();
            assert_eq!(
                lines,
                [
                    "A: hipSuccess",
                    if preload.is_some() {
                        "B: A inside the receiver: yes"
                    } else {
                        "B: A inside the receiver: no"
                    },
                    "B: hipMalloc 0 -> 0",
                    "B: hipMalloc 1 -> 0",
                    "B: hipMalloc 2 -> 0",
                ],
                "{v} preload {preload:?}"
            );
            assert_eq!(
                mallocs(&log),
                3,
                "{v} preload {preload:?}: each hipMalloc once"
            );
        }
    }
}

/// The takeover against the loader's lock: while thread A's first HIP call
/// hands the table over (its receiver's lookups take the loader's lock), the
/// main thread dlopens a library whose constructor, under that lock, makes
/// an HSA call (tests/programs/ctor_hsa_init.c: it loads rocm-fix's engine)
/// or looks hipMalloc up on a handle (ctor_dlsym.c). Neither makes a HIP
/// call without rocm-fix, and rocm-fix must make none there either: it once
/// decided the table route at the engine's load and in its dlsym hook
/// (hipGetErrorName waited on the runtime's once-guard held by thread A,
/// whose receiver waited for the loader's lock: deadlock;
/// tests/programs/loader_lock_race.c).
#[test]
fn a_constructor_under_the_loader_lock_does_not_wait_for_a_table_takeover() {
    let fix = preload();
    for v in ["6.4-amd", "7.2-amd"] {
        let log = tmpdir(&format!("loader-lock-{v}")).join("calls");
        let (dir, cmd) = slowed_program(v, "loader_lock_race", &log);
        let hsa = format!("{}/libhsa-runtime64.so.1", simgpu_lib_for(v).display());
        for (ctor, link, says) in [
            ("ctor_hsa_init", hsa.as_str(), "ctor: hsa_init -> 0"),
            ("ctor_dlsym", "-ldl", "ctor: dlsym hipMalloc -> found"),
        ] {
            let lib = dir.join(format!("lib{ctor}.so"));
            let src = root().join(format!("tests/programs/{ctor}.c"));
            gcc(&[
                "-shared".as_ref(),
                "-fPIC".as_ref(),
                "-o".as_ref(),
                lib.as_os_str(),
                src.as_os_str(),
                link.as_ref(),
            ]);
            for preload in [None, Some(fix.as_path())] {
                let mut c = cmd(preload);
                c.arg(&lib);
                let (r, killed) = run_with_timeout(c, std::time::Duration::from_secs(60));
                assert!(!killed, "{v} {ctor} preload {preload:?}: deadlock: {r:#?}");
                assert_eq!(r.code, Some(0), "{v} {ctor} preload {preload:?}: {r:#?}");
                for line in ["A: hipSuccess", says, "main: dlopen ok"] {
                    assert!(r.stdout.contains(line), "{v} {ctor} {line}: {r:#?}");
                }
                if preload.is_some() {
                    assert!(r.stdout.contains("A inside the receiver: yes"), "{r:#?}");
                }
            }
        }
    }
}

// ---- two fronts, on the paths other than the PLT -----------------------------------

/// Two different librocm_fix.so files preloaded: every path that one front
/// covers (dlsym on a handle, dlvsym with RTLD_DEFAULT/RTLD_NEXT, a library
/// opened with RTLD_DEEPBIND on AMD's builds, hipGetProcAddress) must be
/// seen exactly as with one front (README: "the first in the global scope
/// handles every call").
#[test]
fn two_fronts_cover_every_path_one_front_covers() {
    let fix = preload();
    let copy = tmpdir("second-front-paths");
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(fix.parent().unwrap().join(f), copy.join(f)).unwrap();
    }
    let second = copy.join("librocm_fix.so");
    let failures = std::sync::Mutex::new(Vec::new());
    each_version(|b, v| {
        for mode in [
            "local",
            "global",
            "dlvsym",
            "dlvdefault",
            "deepbind",
            "getproc",
        ] {
            let (one, c1) = run_once(b, v, mode, "r2-one", &[fix.as_path()], &[]);
            let (two, c2) = run_once(
                b,
                v,
                mode,
                "r2-two",
                &[fix.as_path(), second.as_path()],
                &[],
            );
            assert_eq!(one.code, Some(0), "{mode} {v}: {one:#?}");
            if one.stdout != two.stdout || c1 != c2 {
                failures.lock().unwrap().push(format!(
                    "{v} {mode}:\n one front:\n{}\n two fronts:\n{}",
                    one.stdout, two.stdout
                ));
            }
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
