//! The simulated runtime for ROCm 5.2, 6.4 and 7.2 (issue 9): each build exports
//! exactly what Debian's real library of that release exports, at the same
//! version nodes, and behaves as that release where releases differ
//! (tests/simgpu/FAULT-MODEL.md, "Versions" and "Surface").
//! The real libraries come from scripts/fetch-rocm-debs (target/debs, cached).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const VERSIONS: [&str; 3] = ["5.2", "6.4", "7.2"];

fn major(v: &str) -> &str {
    v.split('.').next().unwrap()
}

/// target/debs, downloaded once by scripts/fetch-rocm-debs.
fn debs() -> PathBuf {
    let out = Command::new(root().join("scripts/fetch-rocm-debs"))
        .arg("--quiet")
        .output()
        .expect("scripts/fetch-rocm-debs");
    assert!(
        out.status.success(),
        "fetch-rocm-debs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// "name node" of every defined function in a shared object's dynamic symbols.
fn functions(path: &Path) -> BTreeSet<String> {
    let out = Command::new("readelf")
        .args(["--dyn-syms", "--wide"])
        .arg(path)
        .output()
        .expect("readelf");
    assert!(out.status.success(), "readelf {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() >= 8 && c[3] == "FUNC" && c[6] != "UND").then(|| {
                let (name, node) = c[7].split_once('@').unwrap_or((c[7], ""));
                format!("{name} {}", node.trim_start_matches('@'))
            })
        })
        .collect()
}

/// The committed list: "name node" per line (the third column is the return class).
fn committed(version: &str, lib: &str) -> BTreeSet<String> {
    let path = root().join(format!("tests/simgpu/exports/{version}/{lib}.txt"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split(' ').collect();
            assert_eq!(c.len(), 3, "{l}");
            format!("{} {}", c[0], c[1])
        })
        .collect()
}

#[test]
fn committed_export_lists_equal_the_real_libraries() {
    let debs = debs();
    for v in VERSIONS {
        let dir = debs.join(v).join("root/usr/lib/x86_64-linux-gnu");
        let hip = functions(&dir.join(format!("libamdhip64.so.{}", major(v))));
        let hsa = functions(&dir.join("libhsa-runtime64.so.1"));
        assert_eq!(hip, committed(v, "libamdhip64"), "{v} libamdhip64");
        assert_eq!(
            hsa,
            committed(v, "libhsa-runtime64"),
            "{v} libhsa-runtime64"
        );
    }
    // The return classes too (clang over the real headers).
    let out = Command::new(root().join("scripts/simgpu-exports"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "simgpu-exports --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_build_exports_exactly_its_release_plus_the_private_nodes() {
    for v in VERSIONS {
        let lib = simgpu_lib_for(v);
        let hip = functions(&lib.join(format!("libamdhip64.so.{}", major(v))));
        let hsa = functions(&lib.join("libhsa-runtime64.so.1"));
        let mut want_hip = committed(v, "libamdhip64");
        want_hip.extend(
            [
                "simgpuLaunchRead SIMGPU_1",
                "simgpuLaunchWrite SIMGPU_1",
                "simgpuLaunchReadAsync SIMGPU_1",
                "simgpuMappedBytes SIMGPU_1",
            ]
            .map(String::from),
        );
        assert_eq!(hip, want_hip, "{v} libamdhip64");
        let (private, public): (BTreeSet<_>, BTreeSet<_>) = hsa
            .into_iter()
            .partition(|l| l.ends_with(" SIMGPU_PRIVATE"));
        assert_eq!(
            public,
            committed(v, "libhsa-runtime64"),
            "{v} libhsa-runtime64"
        );
        assert!(
            private.iter().all(|l| l.starts_with("simgpu_")) && !private.is_empty(),
            "{private:?}"
        );
        // libamdhip64 reaches the HSA allocator through its PLT at ROCR_1, as Debian's does.
        let relocs = Command::new("readelf")
            .arg("-rW")
            .arg(lib.join(format!("libamdhip64.so.{}", major(v))))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&relocs.stdout);
        assert!(
            text.lines().any(|l| l.contains("R_X86_64_JUMP_SLO")
                && l.contains("hsa_amd_memory_pool_allocate@ROCR_1")),
            "{v}"
        );
    }
}

fn soname(path: &Path) -> String {
    let o = Command::new("readelf")
        .arg("-dW")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text.lines().find(|l| l.contains("(SONAME)")).unwrap_or("");
    line.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn sonames_are_the_real_ones() {
    let debs = debs();
    for v in VERSIONS {
        let lib = simgpu_lib_for(v);
        let real = debs.join(v).join("root/usr/lib/x86_64-linux-gnu");
        for f in [
            format!("libamdhip64.so.{}", major(v)),
            "libhsa-runtime64.so.1".into(),
        ] {
            assert_eq!(soname(&lib.join(&f)), soname(&real.join(&f)), "{v} {f}");
            assert_eq!(soname(&lib.join(&f)), f);
        }
    }
    // The historical folders: lib is the 6.4 build, lib5 the 5.2 one.
    let base = simgpu_lib();
    assert!(base.join("libamdhip64.so.6").exists());
    assert!(base.join("../lib5/libamdhip64.so.5").exists());
}

/// versions.c built against `v`, run on a simulated gfx1010 of that release.
fn run_versions(v: &str, env: &[(&str, &str)]) -> (Run, Vec<(String, String)>) {
    let prog = program_with("versions", &[&format!("--simgpu={v}")]);
    let mut cmd = clean_command(&prog);
    for (k, val) in simgpu_env_for("gfx1010", v) {
        cmd.env(k, val);
    }
    cmd.envs(env.iter().copied());
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, Some(0), "{v}: {run:#?}");
    let kv = run
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (run, kv)
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> &'a str {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing in {kv:?}"))
}

#[test]
fn a_program_linked_against_each_release_loads_and_runs() {
    for v in VERSIONS {
        let (run, kv) = run_versions(v, &[]);
        assert_eq!(get(&kv, "init"), "0", "{v}");
        assert_eq!(get(&kv, "streams-events"), "1", "{v}");
        assert_eq!(
            get(&kv, "warp"),
            // 6.0+: clr answers with ROCr's VIRTUAL_MEM_API_SUPPORTED (true with KFD).
            if v == "5.2" {
                "32 vmm 1 -1"
            } else {
                "32 vmm 0 1"
            },
            "{v}"
        );
        // hipcc's registration, then a launch with no code object for the device (clr).
        assert_eq!(get(&kv, "launch"), "209", "{v}: hipErrorNoBinaryForGpu");
        assert_eq!(
            get(&kv, "launch-unregistered"),
            "98",
            "{v}: hipErrorInvalidDeviceFunction"
        );
        assert_eq!(get(&kv, "module-elf"), "209", "{v}");
        assert_eq!(get(&kv, "module-junk"), "200", "{v}");
        assert_eq!(get(&kv, "module-function"), "400", "{v}");
        assert_eq!(get(&kv, "malloc"), "0", "{v}");
        assert!(run.stderr.is_empty(), "{v}: {}", run.stderr);
    }
}

#[test]
fn runtime_and_driver_versions_are_each_releases_hip_version() {
    // HIP_VERSION of Debian's hip_version.h for each release (clr returns it from both).
    for (v, want) in [
        ("5.2", "50221153"),
        ("6.4", "60443484"),
        ("7.2", "70253211"),
    ] {
        let (_, kv) = run_versions(v, &[]);
        assert_eq!(get(&kv, "runtime"), format!("0 {want}"), "{v}");
        assert_eq!(get(&kv, "driver"), format!("0 {want}"), "{v}");
    }
    // An older minor of the same major: patch 0.
    let (_, kv) = run_versions("6.4", &[("SIMGPU_ROCM_VERSION", "6.2")]);
    assert_eq!(get(&kv, "runtime"), "0 60200000");
    // Another major is ignored, with one warning.
    let (run, kv) = run_versions("6.4", &[("SIMGPU_ROCM_VERSION", "7.2")]);
    assert_eq!(get(&kv, "runtime"), "0 60443484");
    assert_eq!(
        run.stderr
            .matches("SIMGPU_ROCM_VERSION=7.2 ignored")
            .count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn last_error_keeps_successes_up_to_6x_and_only_errors_in_7x() {
    let (_, kv) = run_versions("5.2", &[]);
    assert_eq!(get(&kv, "last-after-success"), "0");
    assert_eq!(get(&kv, "ext"), "absent");
    let (_, kv) = run_versions("6.4", &[]);
    assert_eq!(
        get(&kv, "last-after-success"),
        "0",
        "6.x: the success cleared it"
    );
    assert_eq!(get(&kv, "ext-then-last"), "101 0", "6.x: one shared slot");
    let (_, kv) = run_versions("7.2", &[]);
    assert_eq!(get(&kv, "last-after-success"), "101", "7.x: errors only");
    assert_eq!(get(&kv, "ext-then-last"), "101 101", "7.x: two slots");
    assert_eq!(
        get(&kv, "ext-after-success"),
        "0",
        "7.x: hipExtGetLastError sees the success"
    );
}

#[test]
fn get_proc_address_opens_the_unversioned_name_in_6x_and_in_debians_7_2() {
    let (_, kv) = run_versions("5.2", &[]);
    assert_eq!(get(&kv, "procaddress"), "absent");
    for v in ["6.4", "7.2"] {
        let (_, kv) = run_versions(v, &[]);
        assert_eq!(get(&kv, "procaddress"), "0 0 1 same 1", "{v}");
        // Without our libamdhip64.so link the name finds another file (Debian's
        // own link where libamdhip64-dev is installed) or none: never this library.
        let nolink = tmpdir(&format!("procaddr-{v}"));
        let lib = simgpu_lib_for(v);
        for f in [
            format!("libamdhip64.so.{}", major(v)),
            "libhsa-runtime64.so.1".into(),
        ] {
            std::os::unix::fs::symlink(lib.join(&f), nolink.join(&f)).unwrap();
        }
        let (_, kv) = run_versions(v, &[("LD_LIBRARY_PATH", nolink.to_str().unwrap())]);
        assert!(get(&kv, "procaddress").ends_with("same 0"), "{v}: {kv:?}");
    }
    // The evidence for 7.2: Debian's 7.2.4 library holds the literal
    // "libamdhip64.so" and no "libamdhip64.so." to append a major to.
    let real = debs().join("7.2/root/usr/lib/x86_64-linux-gnu/libamdhip64.so.7");
    let bytes = std::fs::read(real).unwrap();
    let count = |needle: &[u8]| bytes.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(count(b"\0libamdhip64.so\0"), 1);
    assert_eq!(count(b"libamdhip64.so.\0"), 0);
    assert_eq!(count(b"libamdhip64.so.7\0"), 1, "only the SONAME");
}

#[test]
fn a_stub_returns_not_supported_and_is_logged() {
    for v in VERSIONS {
        let dir = tmpdir(&format!("stub-{v}"));
        let log = dir.join("calls.jsonl");
        let (_, kv) = run_versions(v, &[("SIMGPU_CALL_LOG", log.to_str().unwrap())]);
        assert_eq!(get(&kv, "stub"), "801 hipErrorNotSupported", "{v}");
        let lines = call_log(&log);
        assert!(
            lines.iter().any(|l| l
                == "{\"lib\":\"hip\",\"fn\":\"hipProfilerStart\",\"args\":{\"stub\":true},\"result\":801}"),
            "{v}: {lines:#?}"
        );
    }
}

#[test]
fn simgpu_env_selects_the_release() {
    for (asked, folder) in [
        ("5.2", "lib-5.2"),
        ("6.4", "lib-6.4"),
        ("7.2", "lib-7.2"),
        ("6.2", "lib-6.4"),
    ] {
        let env = simgpu_env_for("gfx1010", asked);
        let ld = &env.iter().find(|(k, _)| k == "LD_LIBRARY_PATH").unwrap().1;
        assert!(ld.ends_with(folder), "{asked}: {ld}");
        let rv = &env
            .iter()
            .find(|(k, _)| k == "SIMGPU_ROCM_VERSION")
            .unwrap()
            .1;
        assert_eq!(rv, asked);
    }
}

#[test]
fn uncached_device_memory_is_refused_before_5_6() {
    // hipExtMallocWithFlags(Uncached) on the 5.2 build (clr handles Uncached from rocm-5.6.0).
    let prog = program_with("simwork52", &["--simgpu=5.2"]);
    let mut cmd = clean_command(&prog);
    for (k, val) in simgpu_env_for("gfx1100", "5.2") {
        cmd.env(k, val);
    }
    let run = Run::from(cmd.arg("3").output().unwrap());
    assert_eq!(run.stdout.trim(), "ext 1", "{run:#?}");
}

#[test]
fn meminfo_in_5_2_counts_what_clr_allocated() {
    // ROCr 5.2 has no MEMORY_AVAIL (5.3+): clr 5.2 reports total minus what this
    // process allocated through it (ROCclr rocdevice.cpp freeMem_, rocm-5.2.3).
    for (v, free) in [
        ("5.2", 8589930496u64),
        ("6.4", 8587837440),
        ("7.2", 8587837440),
    ] {
        let prog = program_with("meminfo", &[&format!("--simgpu={v}")]);
        let mut cmd = clean_command(&prog);
        for (k, val) in simgpu_env_for("gfx1010", v) {
            cmd.env(k, val);
        }
        let run = Run::from(cmd.output().unwrap());
        assert_eq!(
            run.stdout.trim(),
            format!("malloc 0 free {free} total 8589934592"),
            "{v}: {run:#?}"
        );
    }
}

/// simwork linked against release `v`, run on a simulated gfx1010 with the
/// core-file limit given (clr 7.x aborts on GPU errors when core dumps are on).
fn simwork_on(v: &str, core: &str, env: &[(&str, &str)], steps: &[&str]) -> Run {
    let prog = program_with("tests/programs/simwork.c", &[&format!("--simgpu={v}")]);
    let mut cmd = clean_command(std::path::Path::new("sh"));
    // Run in a scratch folder: a core file, if the kernel writes one, lands there.
    cmd.args(["-c", &format!("ulimit -c {core} && exec \"$0\" \"$@\"")])
        .arg(&prog)
        .args(steps)
        .current_dir(tmpdir(&format!("sticky-{v}-{core}")));
    for (k, val) in simgpu_env_for("gfx1010", v) {
        cmd.env(k, val);
    }
    cmd.envs(env.iter().copied());
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_gpu_fault_is_a_sticky_error_in_7x_and_an_abort_before() {
    let steps = [
        "malloc:0x200000",
        "read:0:0:0x201000",
        "sync",
        "malloc:4096",
        "lasterror",
    ];
    let run = simwork_on("7.2", "0", &[], &steps);
    assert_eq!(run.code, Some(1), "no abort in 7.2: {run:#?}");
    assert!(run.rocr_message().is_none(), "{run:#?}");
    for line in [
        "read:0:0:0x201000 -> 700",
        "sync -> 700",
        "malloc:4096 -> 700",
        "last error 700",
    ] {
        assert!(run.stdout.contains(line), "{line}: {run:#?}");
    }
    // clr's own switch, and core dumps enabled, bring the abort back.
    let run = simwork_on("7.2", "0", &[("HIP_SKIP_ABORT_ON_GPU_ERROR", "0")], &steps);
    assert_rocr_page_fault(&run, 1);
    let run = simwork_on("7.2", "1", &[], &steps);
    assert_rocr_page_fault(&run, 1);
    // 6.4: ROCr aborts whatever the core limit.
    let run = simwork_on("6.4", "0", &[], &steps);
    assert_rocr_page_fault(&run, 1);
}

/// A hipcc-built library registers its fat binary at load. clr 5.2 digests it
/// at its first call (or at once when registered later) and aborts when it
/// holds no code object for some GPU; from 5.5 on the miss is only logged and
/// the launch fails (tests/simgpu/FAULT-MODEL.md, "code-object-digest").
#[test]
fn a_fat_binary_without_code_for_the_gpu_aborts_in_5_2_and_fails_the_launch_later() {
    const MISSING: &str =
        "hipErrorNoBinaryForGpu: Unable to find code object for all current devices!";
    let run = |v: &str, args: &[&str]| {
        let prog = program_with("fatbin", &[&format!("--simgpu={v}")]);
        let mut cmd = clean_command(&prog);
        cmd.envs(simgpu_env_for("gfx1010", v)).args(args);
        Run::from(cmd.output().unwrap())
    };
    // The simulated RX 5700 XT's ISA is gfx1010:xnack-: an entry fits when it
    // names the processor and sets no feature the agent does not have.
    for fits in [
        &["gfx1010"][..],
        &["gfx1010:xnack-"],
        &["gfx1030", "gfx1010"],
    ] {
        let r = run("5.2", fits);
        assert_eq!(r.code, Some(0), "{fits:?}: {r:#?}");
        assert!(r.stdout.contains("hipGetDeviceCount 0 1\n"), "{r:#?}");
        assert!(r.stdout.contains("launch 209\n"), "{r:#?}");
    }
    for misses in [
        &["gfx1030"][..],
        &["gfx1010:xnack+"],
        &["gfx1010:sramecc+"],
        &["late", "gfx1030"],
    ] {
        let r = run("5.2", misses);
        assert_eq!(r.signal, Some(6), "{misses:?}: {r:#?}");
        assert!(r.stderr.contains(MISSING), "{misses:?}: {r:#?}");
        assert!(!r.stdout.contains("launch"), "{misses:?}: {r:#?}");
        // Registered before the first call: the abort comes with that call.
        let at = if misses[0] == "late" {
            "hipGetDeviceCount 0 1\n"
        } else {
            "registered\n"
        };
        assert!(r.stdout.ends_with(at), "{misses:?}: {r:#?}");
    }
    for v in ["6.4", "7.2"] {
        for args in [&["gfx1030"][..], &["late", "gfx1030"]] {
            let r = run(v, args);
            assert_eq!(r.code, Some(0), "{v} {args:?}: {r:#?}");
            assert!(r.stdout.contains("launch 209\n"), "{v}: {r:#?}");
            assert!(!r.stderr.contains(MISSING), "{v}: {r:#?}");
        }
    }
}

fn needed(path: &Path) -> Vec<String> {
    let o = Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(path)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

/// AMD's builds (6.4-amd, 7.2-amd) export exactly what Debian's builds of the
/// same release export, and link librocprofiler-register.so.0 (found through
/// RUNPATH $ORIGIN), which Debian's builds, like Debian's real libraries, do not.
#[test]
fn amd_builds_export_the_same_and_only_they_link_rocprofiler_register() {
    for v in ["6.4", "7.2"] {
        let so = format!("libamdhip64.so.{}", major(v));
        let debian = simgpu_lib_for(v).join(&so);
        let amd = simgpu_lib_for(&format!("{v}-amd")).join(&so);
        assert_eq!(functions(&amd), functions(&debian), "{v}");
        assert!(
            needed(&amd).contains(&"librocprofiler-register.so.0".to_string()),
            "{v}: {:?}",
            needed(&amd)
        );
        assert!(
            !needed(&debian).iter().any(|n| n.contains("rocprofiler")),
            "{v}: {:?}",
            needed(&debian)
        );
    }
}
