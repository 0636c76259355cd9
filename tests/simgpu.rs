//! The simulated device, in real processes: every pool mapping, every fault
//! rule and the ROCr fault behaviour of rocm-facts §1, on gfx1010, gfx1030,
//! an overridden gfx1032/gfx1100/gfx1010, gfx1100 and a two-GPU topology.

mod common;
use common::*;

const FINE: u32 = 2;
const COARSE: u32 = 4;
const EXT_FINE: u32 = 8;
const CPU: i32 = 0;
const GPU: i32 = 1;

/// (pool_flags, pool_location) of every application allocation in a call
/// log, skipping the runtime's own first one.
fn pools_used(log: &std::path::Path) -> Vec<(u32, i32)> {
    let mut v: Vec<(u32, i32)> = call_log(log)
        .iter()
        .filter(|l| {
            l.contains("\"fn\":\"hsa_amd_memory_pool_allocate\"") && l.ends_with("\"result\":0}")
        })
        .map(|l| {
            (
                field(l, "pool_flags") as u32,
                field(l, "pool_location") as i32,
            )
        })
        .collect();
    assert!(!v.is_empty(), "the runtime's own allocation is missing");
    v.remove(0);
    v
}

fn field(line: &str, name: &str) -> i64 {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + key.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| c != '-' && !c.is_ascii_digit())
        .unwrap();
    rest[..end].parse().unwrap()
}

fn pool_for(spec: &str, env: &[(&str, &str)], step: &str) -> Option<(u32, i32)> {
    let dir = tmpdir(&format!("pool-{}", step.replace(':', "_")));
    let log = dir.join("calls.jsonl");
    let mut all: Vec<(&str, &str)> = env.to_vec();
    let logs = log.to_string_lossy().to_string();
    all.push(("SIMGPU_CALL_LOG", &logs));
    let run = simwork(spec, &all, &[step]);
    let used = pools_used(&log);
    if run.code != Some(0) {
        assert!(used.is_empty());
        return None;
    }
    assert_eq!(used.len(), 1, "{step}: {used:?}");
    Some(used[0])
}

#[test]
fn hip_calls_use_the_pools_clr_uses() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<(u32, i32)>);
    let cases: &[Case] = &[
        (&[], "malloc:4096", Some((COARSE, GPU))),
        (&[], "hostmalloc:4096:0", Some((FINE, CPU))),
        (&[], "hostmalloc:4096:0x40000000", Some((FINE, CPU))),
        (&[], "hostmalloc:4096:0x2", Some((FINE, CPU))),
        (&[], "hostmalloc:4096:0x20000000", Some((FINE, CPU))),
        (&[], "hostmalloc:4096:0x80000000", Some((COARSE, CPU))),
        (&[], "hostmalloc:4096:0x1", Some((COARSE, CPU))),
        (&[], "hostmalloc:4096:0x4", Some((COARSE, CPU))),
        (&[], "hostmalloc:4096:0xc0000000", None),
        (
            &[("HIP_HOST_COHERENT", "1")],
            "hostmalloc:4096:0x1",
            Some((FINE, CPU)),
        ),
        (
            &[("HIP_HOST_COHERENT", "1")],
            "hostmalloc:4096:0x80000000",
            Some((COARSE, CPU)),
        ),
        (&[], "hostalloc:4096:0", Some((FINE, CPU))),
        (&[], "hostalloc:4096:0x80000000", None),
        (
            &[("SIMGPU_ROCM_VERSION", "6.2")],
            "hostalloc:4096:0x80000000",
            Some((COARSE, GPU)),
        ),
        (&[], "ext:4096:0", Some((COARSE, GPU))),
        (&[], "ext:4096:1", Some((COARSE, GPU))),
        (
            &[("HSA_FORCE_FINE_GRAIN_PCIE", "1")],
            "ext:4096:1",
            Some((FINE, GPU)),
        ),
        (&[("SIMGPU_ROCM_VERSION", "6.2")], "ext:4096:1", None),
        (&[], "ext:8:2", Some((FINE, CPU))),
        (&[], "ext:16:2", None),
        (&[], "ext:4096:3", Some((EXT_FINE, GPU))),
        // 5.2 (Uncached refused before 5.6): tests/simgpu_versions.rs, on the 5.2 build.
        (&[], "ext:4096:4", Some((EXT_FINE, GPU))),
        (&[], "ext:4096:5", None),
        (
            &[("SIMGPU_HMM", "0")],
            "managed:4096:1",
            Some((COARSE, CPU)),
        ),
        (&[], "managed:4096:4", None),
    ];
    for (env, step, want) in cases {
        assert_eq!(pool_for("gfx1100", env, step), *want, "{step} with {env:?}");
    }
}

#[test]
fn managed_memory_with_hmm_is_an_svm_range_accessible_to_every_gpu() {
    let dir = tmpdir("managed");
    let log = dir.join("calls.jsonl");
    let run = simwork(
        "gfx1030,gfx1100",
        &[("SIMGPU_CALL_LOG", log.to_str().unwrap())],
        &[
            "managed:8192:1",
            "setdev:1",
            "read:0:0:8192",
            "advise:0:100",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines = call_log(&log);
    let set: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("hsa_amd_svm_attributes_set"))
        .collect();
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(
        set[0].matches("[512,").count(),
        2,
        "AGENT_ACCESSIBLE for both GPUs: {}",
        set[0]
    );
    assert!(
        set[1].contains("[0,\"0x1\"]"),
        "SetCoarseGrain sets GLOBAL_FLAG coarse: {}",
        set[1]
    );
    assert!(!lines
        .iter()
        .skip(1)
        .any(|l| l.contains("memory_pool_allocate") && l.contains("\"size\":8192")));
}

#[test]
fn internal_runtime_buffer_comes_from_the_cpu_fine_pool() {
    let dir = tmpdir("internal");
    let log = dir.join("calls.jsonl");
    let run = simwork(
        "gfx1010",
        &[("SIMGPU_CALL_LOG", log.to_str().unwrap())],
        &["init"],
    );
    assert_eq!(run.code, Some(0));
    let first = call_log(&log)
        .into_iter()
        .find(|l| l.contains("memory_pool_allocate"))
        .unwrap();
    assert_eq!(
        (field(&first, "pool_flags"), field(&first, "pool_location")),
        (FINE as i64, CPU as i64)
    );
}

#[test]
fn call_log_lines_are_json_with_pointers_as_strings() {
    let dir = tmpdir("calllog");
    let log = dir.join("calls.jsonl");
    let run = simwork(
        "gfx1100",
        &[("SIMGPU_CALL_LOG", log.to_str().unwrap())],
        &["malloc:100", "read:0:0:100", "free:0"],
    );
    assert_eq!(run.code, Some(0));
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import json,sys,re\n\
             n=0\n\
             for l in open(sys.argv[1]):\n\
             \x20   d=json.loads(l); n+=1\n\
             \x20   assert set(d)=={'lib','fn','args','result'}, d\n\
             \x20   for k,v in d['args'].items():\n\
             \x20       if k in ('ptr','pool','agent','base','dst','src','callback'): assert isinstance(v,str) and v.startswith('0x'), (k,v)\n\
             print(n)",
        )
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let n: usize = String::from_utf8_lossy(&check.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(n > 10, "both libraries log: {n} lines");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"lib\":\"hsa\"") && text.contains("\"fn\":\"hipMalloc\""));
}

// ---- page-not-present ----

#[test]
fn over_read_past_the_last_page_aborts_with_the_rocr_message() {
    let run = simwork("gfx1100", &[], &["malloc:4096", "read:0:0:4097"]);
    assert_rocr_page_fault(&run, 1);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "the read never returned: {}",
        run.stdout
    );
}

#[test]
fn allocations_map_whole_pages() {
    let run = simwork(
        "gfx1100",
        &[],
        &["malloc:100", "read:0:0:4096", "write:0:4000:96"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let run = simwork(
        "gfx1100",
        &[],
        &["malloc:100", "free:0", "malloc:100", "read:1:4095:2"],
    );
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn freed_memory_is_not_mapped() {
    let run = simwork(
        "gfx1100",
        &[],
        &[
            "malloc:8192",
            "malloc:4096",
            "read:0:0:8192",
            "free:0",
            "read:0:0:4",
        ],
    );
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn page_not_present_rule_can_be_switched_off() {
    let run = simwork(
        "gfx1100",
        &[(
            "SIMGPU_FAULT_RULES",
            "seed-coherent,override-family,internal-coherence",
        )],
        &["malloc:4096", "read:0:0:8192"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn the_fault_names_the_gpu_node_of_the_device() {
    let run = simwork(
        "gfx1030,gfx1100",
        &[],
        &["setdev:1", "malloc:4096", "read:0:0:8192"],
    );
    assert_rocr_page_fault(&run, 2);
}

#[test]
fn vm_fault_message_can_be_silenced_but_the_process_still_aborts() {
    let run = simwork(
        "gfx1100",
        &[("HSA_ENABLE_VM_FAULT_MESSAGE", "0")],
        &["malloc:4096", "read:0:0:8192"],
    );
    assert!(run.aborted(), "{run:#?}");
    assert!(run.rocr_message().is_none());
}

// ---- the system event handler ----

#[test]
fn a_handler_returning_success_suppresses_message_and_abort_but_queues_die() {
    let run = simwork(
        "gfx1100",
        &[],
        &[
            "handler:suppress",
            "malloc:4096",
            "read:0:0:4096",
            "read:0:0:8192",
            "read:0:0:4",
            "sync",
            "malloc:64",
        ],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.rocr_message().is_none(), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("read:0:0:4096 -> 0"));
    assert!(out.contains("read:0:0:8192 -> 700"), "{out}");
    assert!(out.contains("read:0:0:4 -> 719"), "{out}");
    assert!(out.contains("sync -> 719"), "{out}");
    assert!(
        out.contains("malloc:64 -> 0"),
        "allocation still works: {out}"
    );
    // The event: type 0, page-aligned address one page past the buffer, PAGE_NOT_PRESENT.
    let ev: Vec<_> = out.lines().filter(|l| l.starts_with("event ")).collect();
    assert_eq!(ev.len(), 1, "only the first fault reaches handlers: {out}");
    assert!(
        ev[0].starts_with("event type=0 addr=0x") && ev[0].ends_with("000 mask=0x1"),
        "{}",
        ev[0]
    );
}

#[test]
fn every_handler_is_called_and_one_success_is_enough() {
    let run = simwork(
        "gfx1100",
        &[],
        &[
            "handler:pass",
            "handler:suppress",
            "malloc:4096",
            "read:0:0:8192",
        ],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("event "))
            .count(),
        2,
        "{}",
        run.stdout
    );
    assert!(run.rocr_message().is_none());
}

#[test]
fn a_failing_handler_sees_the_event_then_rocr_aborts() {
    let run = simwork(
        "gfx1100",
        &[],
        &["handler:pass", "malloc:4096", "read:0:0:8192"],
    );
    assert!(run.stdout.contains("event type=0"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn registering_before_hsa_init_is_not_initialized() {
    let run = simwork("gfx1100", &[], &["early-handler"]);
    assert!(run.stdout.contains("early-handler -> 4107"), "{run:#?}");
}

// ---- seed-coherent (the seed's hypothesis) ----

#[test]
fn coherent_memory_faults_on_rdna1_and_rdna2_only() {
    for spec in ["gfx1010", "gfx1030"] {
        for step in [
            "hostmalloc:4096:0",
            "hostmalloc:4096:0x40000000",
            "ext:4096:3",
            "managed:4096:1",
        ] {
            let run = simwork(spec, &[], &[step, "read:0:0:64"]);
            assert_rocr_page_fault(&run, 1);
        }
        for step in ["hostmalloc:4096:0x80000000", "malloc:4096", "ext:4096:1"] {
            let run = simwork(spec, &[], &[step, "read:0:0:64"]);
            assert_eq!(run.code, Some(0), "{spec} {step}: {run:#?}");
        }
        let run = simwork(
            spec,
            &[],
            &["managed:4096:1", "advise:0:100", "read:0:0:64"],
        );
        assert_eq!(
            run.code,
            Some(0),
            "{spec}: coarse-grained SVM is fine: {run:#?}"
        );
        let run = simwork(
            spec,
            &[],
            &[
                "managed:4096:1",
                "advise:0:100",
                "advise:0:101",
                "read:0:0:64",
            ],
        );
        assert_rocr_page_fault(&run, 1);
    }
    let run = simwork(
        "gfx1100",
        &[],
        &[
            "hostmalloc:4096:0",
            "managed:4096:1",
            "read:0:0:64",
            "read:1:0:64",
        ],
    );
    assert_eq!(run.code, Some(0), "RDNA3 is not affected: {run:#?}");
    let run = simwork(
        "gfx1010",
        &[(
            "SIMGPU_FAULT_RULES",
            "page-not-present,override-family,internal-coherence",
        )],
        &["hostmalloc:4096:0", "read:0:0:64"],
    );
    assert_eq!(run.code, Some(0), "rule off: {run:#?}");
}

#[test]
fn the_real_chip_decides_not_the_override() {
    // An RDNA2 gfx1032 reported as gfx1030 is still RDNA2: coherent memory faults.
    let ov = [("HSA_OVERRIDE_GFX_VERSION", "10.3.0")];
    let run = simwork(
        "gfx1032",
        &ov,
        &["arch", "hostmalloc:4096:0", "read:0:0:64"],
    );
    assert!(run.stdout.contains("arch gfx1030 "), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
    // An RDNA3 card reported as gfx1030 is not RDNA2 (override-family off to see it).
    let run = simwork(
        "gfx1100",
        &[
            ov[0],
            (
                "SIMGPU_FAULT_RULES",
                "page-not-present,seed-coherent,internal-coherence",
            ),
        ],
        &["arch", "hostmalloc:4096:0", "read:0:0:64"],
    );
    assert!(run.stdout.contains("arch gfx1030 "), "{run:#?}");
    assert_eq!(run.code, Some(0), "{run:#?}");
    // The override never changes the topology.
    let topo = simgpu_env("gfx1100")
        .into_iter()
        .find(|(k, _)| k == "SIMGPU_KFD_TOPOLOGY")
        .unwrap()
        .1;
    let props = std::fs::read_to_string(format!("{topo}/nodes/1/properties")).unwrap();
    assert!(props.contains("gfx_target_version 110000"), "{props}");
}

#[test]
fn per_node_override_applies_to_its_node_only() {
    let run = simwork(
        "gfx1030,gfx1032",
        &[("HSA_OVERRIDE_GFX_VERSION_2", "10.3.0")],
        &["arch", "setdev:1", "arch"],
    );
    assert!(
        run.stdout
            .contains("arch gfx1030 name AMD Radeon RX 6900 XT"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("arch gfx1030 name AMD Radeon RX 6600 XT"),
        "{run:#?}"
    );
    let run = simwork("gfx1030,gfx1032", &[], &["setdev:1", "arch"]);
    assert!(
        run.stdout
            .contains("arch gfx1032 name AMD Radeon RX 6600 XT"),
        "{run:#?}"
    );
}

// ---- override-family and override-rdna1-as-rdna2 ----

#[test]
fn an_override_across_major_families_faults_on_the_first_launch() {
    let ov = ("HSA_OVERRIDE_GFX_VERSION", "10.3.0");
    let run = simwork("gfx1100", &[ov], &["malloc:4096", "read:0:0:64"]);
    assert_rocr_page_fault(&run, 1);
    let run = simwork(
        "gfx1100",
        &[ov, ("SIMGPU_FAULT_RULES", "page-not-present")],
        &["malloc:4096", "read:0:0:64"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let run = simwork("gfx1032", &[ov], &["malloc:4096", "read:0:0:64"]);
    assert_eq!(run.code, Some(0), "same family: {run:#?}");
}

#[test]
fn rdna1_as_rdna2_crash_rule_is_off_by_default() {
    let ov = ("HSA_OVERRIDE_GFX_VERSION", "10.3.0");
    let run = simwork("gfx1010", &[ov], &["malloc:4096", "read:0:0:64"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let run = simwork(
        "gfx1010",
        &[ov, ("SIMGPU_FAULT_RULES", "all")],
        &["malloc:4096", "read:0:0:64"],
    );
    assert_rocr_page_fault(&run, 1);
}

// ---- internal-coherence ----

#[test]
fn a_preload_that_rewrites_the_runtimes_own_buffer_breaks_every_launch() {
    let pre = program_with("rewrite_preload", &["-shared"]);
    let prog = program("simwork");
    let mut cmd = sim_command(&prog, "gfx1100");
    cmd.env("LD_PRELOAD", &pre)
        .args(["malloc:4096", "read:0:0:64", "sync"]);
    let run = Run::from(cmd.output().unwrap());
    assert!(run.stdout.contains("read:0:0:64 -> 719"), "{run:#?}");
    assert!(run.rocr_message().is_none());
    let mut cmd = sim_command(&prog, "gfx1100");
    cmd.env("LD_PRELOAD", &pre)
        .env(
            "SIMGPU_FAULT_RULES",
            "page-not-present,seed-coherent,override-family",
        )
        .args(["malloc:4096", "read:0:0:64"]);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, Some(0), "rule off: {run:#?}");
}

// ---- identity, devices, hipGetProcAddress, threads ----

#[test]
fn devices_and_names_come_from_the_topology() {
    let run = simwork("gfx1010", &[], &["count", "arch"]);
    assert!(run.stdout.contains("devices 1"));
    assert!(
        run.stdout
            .contains("arch gfx1010:xnack- name AMD Radeon RX 5700 XT"),
        "{run:#?}"
    );
    let run = simwork(
        "gfx1030,gfx1100",
        &[],
        &["count", "setdev:1", "arch", "setdev:2"],
    );
    assert!(run.stdout.contains("devices 2"));
    assert!(
        run.stdout
            .contains("arch gfx1100 name AMD Radeon RX 7900 XTX"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("setdev:2 -> 101"), "{run:#?}");
}

#[test]
fn no_kfd_means_no_device() {
    let run = simwork(
        "gfx1010",
        &[("SIMGPU_KFD_TOPOLOGY", "/nonexistent")],
        &["count", "malloc:64"],
    );
    assert!(run.stdout.contains("count -> 100"), "{run:#?}");
    assert!(run.stdout.contains("devices 0"));
    assert!(run.stdout.contains("malloc:64 -> 100"));
}

#[test]
fn vram_is_finite() {
    let run = simwork(
        "gfx1010:vram=1M",
        &[],
        &["malloc:0x80000", "malloc:0x80000", "malloc:4096"],
    );
    assert!(
        run.stdout.contains("malloc:4096 -> 2"),
        "hipErrorOutOfMemory: {run:#?}"
    );
}

#[test]
fn get_proc_address_bypasses_preloaded_definitions() {
    let prog = program("getproc");
    let run = Run::from(sim_command(&prog, "gfx1010").output().unwrap());
    assert!(
        run.stdout.contains("getproc 0 status 0 same-as-library 1"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("missing 1 status 1 null 1"), "{run:#?}");
    assert!(run.stdout.contains("props-maps-to-R0600 1"), "{run:#?}");
    let pre = program_with("rewrite_preload", &["-shared"]);
    let mut cmd = sim_command(&prog, "gfx1010");
    cmd.env("LD_PRELOAD", &pre)
        .env("SIMGPU_FAULT_RULES", "none");
    let run = Run::from(cmd.output().unwrap());
    assert!(
        run.stdout.contains("same-as-library 1") && run.stdout.contains("call 0"),
        "{run:#?}"
    );
    assert!(
        !run.stderr.contains("rewrite_preload: hipMalloc"),
        "the preload was bypassed: {run:#?}"
    );
    // Without our unversioned libamdhip64.so link, whatever file that name finds
    // first answers (Debian's own link, where libamdhip64-dev is installed).
    let nolink = tmpdir("nolink");
    let lib = simgpu_lib();
    for f in ["libamdhip64.so.6", "libhsa-runtime64.so.1"] {
        std::os::unix::fs::symlink(lib.join(f), nolink.join(f)).unwrap();
    }
    let mut cmd = sim_command(&prog, "gfx1010");
    cmd.env("LD_LIBRARY_PATH", &nolink);
    let run = Run::from(cmd.output().unwrap());
    assert!(!run.stdout.contains("same-as-library 1"), "{run:#?}");
}

#[test]
fn thirty_two_threads_allocate_launch_and_free() {
    let prog = program("threads");
    let run = Run::from(sim_command(&prog, "gfx1100").output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("errors 0 whole-vram 0"), "{run:#?}");
}

#[test]
fn simgpu_env_rejects_unknown_agents() {
    let out = std::process::Command::new(root().join("scripts/simgpu-env"))
        .arg("gfx9999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent 'gfx9999'"));
}
