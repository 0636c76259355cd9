//! `rocm-fix validate`: the probe kernels' bundle, and the whole command on
//! the simulated RX 5700 XT (gfx1010), RX 6800 (gfx1030) and RX 7900 (gfx1100).

mod common;

use rocm_fix_command::validate::bundle;

/// The bundle scripts/build puts next to the command holds a code object for
/// every target the toolchain supports among gfx1010-1012, gfx1030-1036 and
/// gfx1100-1103 (bookworm's clang-15 supports all of them), each with every
/// probe kernel, and TARGETS says so.
#[test]
fn the_probe_bundle_holds_every_rdna1_2_3_target_with_every_kernel() {
    let dir = common::preload().parent().unwrap().join("probes");
    let (bytes, targets) = bundle::load(&dir.join("probes.co")).unwrap();
    let mut got = targets.clone();
    got.sort();
    assert_eq!(got, bundle::WANTED.to_vec(), "targets in the bundle");
    let listed = std::fs::read_to_string(dir.join("TARGETS")).unwrap();
    let listed: Vec<&str> = listed.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(listed, bundle::WANTED.to_vec(), "TARGETS");
    // Each entry is a code object for its own target: EF_AMDGPU_MACH of e_flags.
    let mach = |t: &str| match t {
        "gfx1010" => 0x33,
        "gfx1011" => 0x34,
        "gfx1012" => 0x35,
        "gfx1030" => 0x36,
        "gfx1031" => 0x37,
        "gfx1032" => 0x38,
        "gfx1033" => 0x39,
        "gfx1035" => 0x3d,
        "gfx1034" => 0x3e,
        "gfx1100" => 0x41,
        "gfx1103" => 0x44,
        "gfx1036" => 0x45,
        "gfx1101" => 0x46,
        "gfx1102" => 0x47,
        _ => 0,
    };
    for e in bundle::entries(&bytes).unwrap() {
        let flags = u32::from_le_bytes(bytes[e.offset + 0x30..e.offset + 0x34].try_into().unwrap());
        assert_eq!(
            flags & 0xff,
            mach(&e.target),
            "{}: e_flags {flags:#x}",
            e.id
        );
    }
}

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `rocm-fix validate ARGS` on the simulated `spec` (release `version`), in a
/// fresh empty folder that is also HOME; extra env applied last.
fn validate(
    spec: &str,
    version: &str,
    args: &[&str],
    env: &[(&str, &str)],
    tag: &str,
) -> (Output, std::path::PathBuf) {
    let cmd_path = common::preload().parent().unwrap().join("rocm-fix");
    let dir = common::tmpdir(&format!("validate-{tag}"));
    let mut cmd: Command = common::clean_command(&cmd_path);
    for (k, v) in common::simgpu_env_for(spec, version) {
        cmd.env(k, v);
    }
    cmd.current_dir(&dir)
        .env("HOME", &dir)
        .args(["validate"])
        .args(args)
        .envs(env.iter().copied());
    (cmd.output().unwrap(), dir)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn outcomes(report: &Value, override_: Option<&str>) -> Vec<(String, String, String)> {
    report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["override"].as_str() == override_)
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["without"]["outcome"].as_str().unwrap().to_string(),
                p["with"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What the simulator's fault model predicts for each probe: past a buffer
/// that ends at its block's end (2 MiB, 20 MiB) the guard page faults, and
/// rocm-fix (active on RDNA1/2 in its default `auto` mode, not on RDNA3)
/// keeps the pages after it mapped; past a 2 MiB + 4 KiB buffer (its own
/// 4 MiB block) and inside a block the read stays in mapped memory; coherent
/// memory and the polled flag work unless seed-coherent is asked for.
fn predicted(name: &str, rdna12: bool) -> (&'static str, &'static str) {
    let block_end = name.starts_with("overread-2MiB-") || name.starts_with("overread-20MiB-");
    match (block_end, rdna12) {
        (true, true) => ("fault", "completed"),
        (true, false) => ("fault", "fault"),
        _ => ("completed", "completed"),
    }
}

#[test]
fn validate_reports_what_the_model_predicts_on_rdna1_rdna2_and_rdna3() {
    for (spec, version, rdna12) in [
        ("gfx1010", "6.4", true),
        ("gfx1030", "6.4", true),
        ("gfx1100", "6.4", false),
        ("gfx1010", "7.2", true),
    ] {
        let (out, dir) = validate(
            spec,
            version,
            &["--yes", "--report", "rep"],
            &[],
            &format!("{spec}-{version}"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{spec}@{version}: {stderr}");
        // Nothing outside the report folder (the folder is also HOME).
        assert_eq!(entries(&dir), ["rep"], "{spec}@{version}");
        assert_eq!(entries(&dir.join("rep")), ["report.json", "report.md"]);
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("rep/report.json")).unwrap())
                .unwrap();
        assert_eq!(report["identity"]["real_gfx"], spec);
        assert!(report["identity"]["runtime_loaded_from"]
            .as_str()
            .unwrap()
            .contains(&format!("lib-{version}/libamdhip64.so")));
        let got = outcomes(&report, None);
        assert_eq!(got.len(), 16, "{spec}@{version}");
        for (name, without, with) in &got {
            let (w0, w1) = predicted(name, rdna12);
            assert_eq!(
                (without.as_str(), with.as_str()),
                (w0, w1),
                "{spec}@{version} {name}"
            );
        }
        let p = &report["probes"][0];
        if version == "6.4" {
            // ROCr's line, from the child that aborted.
            assert!(
                p["without"]["rocr_line"]
                    .as_str()
                    .unwrap()
                    .starts_with("Memory access fault by GPU node-1"),
                "{p}"
            );
            assert_eq!(p["without"]["status"], "signal 6");
        } else {
            // 7.x: the fault is a sticky error the probe sees, not an abort.
            assert!(
                p["without"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("hipErrorIllegalAddress"),
                "{p}"
            );
        }
        // rocm-fix's counters, from its C API in the child: on RDNA1/2 the
        // buffer got its mapped pages after the end; on RDNA3 (`auto` mode)
        // rocm-fix stood aside and its child aborted like the one without.
        if rdna12 {
            assert_eq!(p["with"]["rocm_fix_stats"]["padded"], 1, "{p}");
        } else {
            assert_eq!(p["with"]["status"], "signal 6", "{p}");
            assert_eq!(report["probes"][6]["with"]["rocm_fix_stats"]["padded"], 0);
        }
        assert!(
            p["without"]["rocm_fix_stats"].is_null()
                || p["without"]["rocm_fix_stats"]["intercepted"] == 0
        );
        // The summary the user sees.
        let md = std::fs::read_to_string(dir.join("rep/report.md")).unwrap();
        assert!(
            stdout.contains("| overread-2MiB-by-256B | - | fault |"),
            "{stdout}"
        );
        assert!(md.contains(&format!("real chip {spec}")), "{md}");
        assert!(
            stderr.contains("[16/16] poll-hostmalloc-flag without: completed, with: completed"),
            "{stderr}"
        );
    }
}

#[test]
fn under_the_seed_hypothesis_coherent_memory_faults_without_and_completes_with_the_rewrite() {
    let (out, dir) = validate(
        "gfx1010",
        "6.4",
        &["--yes", "--report", "rep", "--json"],
        &[("SIMGPU_FAULT_RULES", "default,seed-coherent")],
        "seed",
    );
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(dir.join("rep/report.json")).unwrap()
        )
        .unwrap()
    );
    let got = outcomes(&report, None);
    for name in [
        "coherent-hostmalloc-default",
        "coherent-managed",
        "poll-hostmalloc-flag",
    ] {
        let o = got.iter().find(|(n, _, _)| n == name).unwrap();
        assert_eq!(
            (o.1.as_str(), o.2.as_str()),
            ("fault", "completed"),
            "{name}"
        );
    }
    let poll = report["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "poll-hostmalloc-flag")
        .unwrap();
    assert_eq!(
        poll["with"]["detail"]["host_saw_flag_while_kernel_ran"],
        true
    );
    assert_eq!(poll["with"]["rocm_fix_stats"]["rewritten"], 1);
}

#[test]
fn with_overrides_runs_the_probes_again_under_what_rx_5000_owners_try() {
    let (out, _dir) = validate(
        "gfx1010",
        "6.4",
        &["--yes", "--report", "rep", "--json", "--with-overrides"],
        &[],
        "overrides",
    );
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let under = outcomes(&report, Some("10.3.0"));
    assert_eq!(under.len(), 16);
    // The gfx1030 code object loads on the card reported as gfx1030.
    assert!(under.iter().all(|(_, w0, _)| w0 != "error"), "{under:?}");
    assert_eq!(report["probes"][16]["name"], "overread-2MiB-by-256B");
    assert_eq!(
        (
            report["probes"][16]["without"]["outcome"].as_str(),
            report["probes"][16]["with"]["outcome"].as_str()
        ),
        (Some("fault"), Some("completed"))
    );
}

#[test]
fn without_yes_and_without_a_terminal_it_says_what_may_happen_and_runs_nothing() {
    let (out, dir) = validate("gfx1010", "6.4", &["--report", "rep"], &[], "ask");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the driver may reset\n    the GPU, the screen may flicker"),
        "{stderr}"
    );
    assert!(stderr.contains("add --yes"), "{stderr}");
    assert!(entries(&dir).is_empty());
}

/// The simulator loads the bundle only for a device it holds a code object
/// for: a gfx1151 (Strix Halo, not in the bundle) is an `error` with clr's
/// hipErrorNoBinaryForGpu, not a pass.
#[test]
fn a_gpu_the_bundle_has_no_code_object_for_is_an_error() {
    let (out, _dir) = validate(
        "gfx1151",
        "6.4",
        &["--yes", "--report", "rep", "--json"],
        &[],
        "nobinary",
    );
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &report["probes"][0];
    assert_eq!(p["without"]["outcome"], "error");
    assert!(
        p["without"]["detail"]
            .as_str()
            .unwrap()
            .contains("hipErrorNoBinaryForGpu"),
        "{p}"
    );
}
