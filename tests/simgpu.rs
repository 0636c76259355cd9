//! The simulated device, in real processes: every pool mapping, every fault
//! rule and ROCr's fault behaviour (FAULT-MODEL.md, "The fault path"), on gfx1010, gfx1030,
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

// ---- page-not-present, on ROCr's memory layout (FAULT-MODEL.md) ----

#[test]
fn over_read_past_a_block_end_aborts_with_the_rocr_message() {
    // A 2 MiB hipMalloc takes a block of its own; the page after it is a guard page.
    let run = simwork("gfx1100", &[], &["malloc:0x200000", "read:0:0:0x200001"]);
    assert_rocr_page_fault(&run, 1);
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "the read never returned: {}",
        run.stdout
    );
}

#[test]
fn an_over_read_inside_a_block_reads_the_neighbour_and_does_not_fault() {
    // kfd-object: the whole 2 MiB block is mapped, whatever part of it is handed out.
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:4096",
            "read:0:0:8192",
            "malloc:150000",
            "read:1:0:340000",
            "write:0:4000:8192",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn a_small_buffer_that_ends_at_a_block_end_faults() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:0x1ff000",
            "malloc:0x1000",
            "offset:0:1",
            "mapped:1:0",
            "read:1:0:0x1001",
        ],
    );
    assert!(run.stdout.contains("offset 2093056\n"), "{run:#?}");
    assert!(run.stdout.contains("mapped 4096\n"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn best_fit_cuts_the_smallest_fragment_from_its_front_in_whole_pages() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:0x10000",
            "malloc:0x10000",
            "malloc:0x10000",
            "free:1",
            "malloc:0x8000",
            "offset:0:3",
            "malloc:100",
            "malloc:100",
            "offset:4:5",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let offs: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("offset "))
        .collect();
    // The 64 KiB hole left by buffer 1 is the best fit for 32 KiB; 100 bytes take a page.
    assert_eq!(offs, ["offset 65536", "offset 4096"], "{run:#?}");
}

#[test]
fn exactly_two_mib_takes_a_fresh_block_and_a_smaller_request_takes_the_cached_one() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:0x200000",
            "free:0",
            "malloc:0x200000",
            "offset:0:1",
            "malloc:4096",
            "offset:0:2",
            "align:1",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let offs: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("offset "))
        .collect();
    assert_ne!(offs[0], "offset 0", "a fresh block: {run:#?}");
    assert_eq!(offs[1], "offset 0", "the cached block: {run:#?}");
    assert!(run.stdout.contains("align 0x0\n"), "kfd-va-align: {run:#?}");
}

#[test]
fn a_request_over_two_mib_gets_its_own_block_whose_tail_is_never_handed_out() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:0x300000",
            "mapped:0:0x300000",
            "malloc:4096",
            "range:0:0",
            "read:0:0:0x400000",
            "read:0:0:0x400001",
        ],
    );
    assert!(run.stdout.contains("mapped 1048576\n"), "{run:#?}");
    // The small buffer is not in the tail: the first buffer's range is what was asked.
    assert!(
        run.stdout.contains("range base+0 size 3145728\n"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("read:0:0:0x400000 -> 0"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
    let run = simwork(
        "gfx1010",
        &[],
        &["malloc:0x300000", "malloc:4096", "offset:0:1"],
    );
    let off: i64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("offset "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !(0..0x400000).contains(&off),
        "outside the large block: {off:#x}"
    );
}

#[test]
fn free_blocks_are_cached_and_balance_releases_the_oldest() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "malloc:0x200000",
            "malloc:0x200000",
            "malloc:0x200000",
            "free:0",
            "free:1",
            "free:2",
            "mapped:0:0",
            "mapped:1:0",
            "mapped:2:0",
        ],
    );
    let mapped: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("mapped "))
        .collect();
    // One block always stays cached (still mapped); the older ones go back to KFD.
    assert_eq!(
        mapped,
        ["mapped 0", "mapped 0", "mapped 2097152"],
        "{run:#?}"
    );
}

#[test]
fn out_of_vram_trims_the_block_cache_and_retries_once() {
    let steps = [
        "malloc:0x200000",
        "malloc:0x200000",
        "malloc:0x200000",
        "malloc:0x200000",
        "free:0",
        "free:1",
        "free:2",
        "free:3",
        "malloc:0x700000",
    ];
    let run = simwork("gfx1010:vram=8M", &[], &steps);
    assert!(run.stdout.contains("malloc:0x700000 -> 0"), "{run:#?}");
    let run = simwork(
        "gfx1010:vram=8M",
        &[],
        &["malloc:0x600000", "malloc:0x200000", "malloc:4096"],
    );
    assert!(
        run.stdout.contains("malloc:4096 -> 2"),
        "hipErrorOutOfMemory: {run:#?}"
    );
}

#[test]
fn without_the_fragment_allocator_every_allocation_is_its_own_object() {
    let env = [("HSA_DISABLE_FRAGMENT_ALLOCATOR", "1")];
    let run = simwork("gfx1010", &env, &["malloc:4096", "read:0:0:8192"]);
    assert_rocr_page_fault(&run, 1);
    let run = simwork(
        "gfx1010",
        &env,
        &["malloc:0x300000", "align:0", "mapped:0:0"],
    );
    assert!(run.stdout.contains("align 0x0\n"), "{run:#?}");
    assert!(run.stdout.contains("mapped 3145728\n"), "{run:#?}");
}

#[test]
fn host_memory_is_its_own_page_granular_object() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "hostmalloc:4096:0x80000000",
            "read:0:0:4096",
            "read:0:0:8192",
        ],
    );
    assert!(run.stdout.contains("read:0:0:4096 -> 0"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn mem_get_info_reports_what_kfd_has_handed_out() {
    let run = simwork("gfx1010", &[], &["info", "malloc:4096", "info"]);
    let infos: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("free "))
        .collect();
    assert_eq!(
        infos,
        [
            "free 8589934592 total 8589934592",
            "free 8587837440 total 8589934592"
        ],
        "a 4 KiB buffer commits a 2 MiB block: {run:#?}"
    );
    // ROCm 5.2: tests/simgpu_versions.rs, meminfo_in_5_2_counts_what_clr_allocated.
}

#[test]
fn pitched_allocations_round_the_row_to_256_bytes() {
    let run = simwork("gfx1010", &[], &["pitch:100:10", "range:0:300"]);
    assert!(run.stdout.contains("pitch 256\n"), "{run:#?}");
    assert!(run.stdout.contains("range base+0 size 2560\n"), "{run:#?}");
}

#[test]
fn arrays_are_images_from_vram_or_else_host_memory() {
    // Rows of alignUp(100 x 4, 256) = 512 bytes.
    let run = simwork("gfx1010", &[], &["array:100:10", "range:0:0"]);
    assert!(run.stdout.contains("range base+0 size 5120\n"), "{run:#?}");
    // With the VRAM full, clr falls back to host memory without a word.
    let run = simwork("gfx1010:vram=2M", &[], &["malloc:0x200000", "array:100:10"]);
    assert!(run.stdout.contains("array:100:10 -> 0"), "{run:#?}");
    assert!(run.stdout.contains("malloc:0x200000 -> 0"), "{run:#?}");
}

#[test]
fn pools_of_ones_own_allocate_through_the_same_path() {
    let run = simwork(
        "gfx1010",
        &[],
        &["poolasync:0x200000", "read:0:0:0x200000", "info"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("free 8587837440 "),
        "one 2 MiB block: {run:#?}"
    );
}

#[test]
fn stream_ordered_frees_keep_the_block_until_a_synchronize() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "async:0x300000",
            "freeasync:0",
            "async:0x100000",
            "offset:0:1",
            "freeasync:1",
            "mapped:0:0",
            "sync",
            "mapped:0:0",
        ],
    );
    assert!(run.stdout.contains("offset 0\n"), "reused whole: {run:#?}");
    let mapped: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("mapped "))
        .collect();
    assert_eq!(mapped, ["mapped 4194304", "mapped 0"], "{run:#?}");
}

#[test]
fn vmm_mappings_are_mapped_only_where_mapped() {
    let run = simwork(
        "gfx1010",
        &[],
        &["vmm:0x200000", "read:0:0:0x200000", "read:0:0:0x200001"],
    );
    assert!(run.stdout.contains("read:0:0:0x200000 -> 0"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn a_reservation_can_take_the_guard_gap_after_a_block_in_the_mmap_aperture() {
    // kfd-fixed-address: the page after a block is unmapped, not reserved, in
    // the x86_64 default aperture; HSA_RESERVE_SVM=1 reserves guard pages.
    let steps = [
        "malloc:0x200000",
        "sink:0:0x200000:0x10000",
        "mapped:0:0x1ff000",
        "read:0:0:0x210000",
    ];
    let run = simwork("gfx1010", &[], &steps);
    assert!(run.stdout.contains("sink at-hint\n"), "{run:#?}");
    assert!(
        run.stdout.contains("mapped 69632\n"),
        "the block's last page and the 64 KiB after it: {run:#?}"
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let run = simwork("gfx1010", &[("HSA_RESERVE_SVM", "1")], &steps);
    assert!(run.stdout.contains("sink elsewhere\n"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn freed_memory_is_not_mapped() {
    let run = simwork(
        "gfx1100",
        &[],
        &[
            "malloc:0x200000",
            "malloc:0x300000",
            "read:1:0:0x300000",
            "free:1",
            "read:1:0:4",
        ],
    );
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn page_not_present_rule_can_be_switched_off() {
    let run = simwork(
        "gfx1100",
        &[("SIMGPU_FAULT_RULES", "override-family")],
        &["malloc:0x200000", "read:0:0:0x201000"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn the_fault_names_the_gpu_node_of_the_device() {
    let run = simwork(
        "gfx1030,gfx1100",
        &[],
        &["setdev:1", "malloc:0x200000", "read:0:0:0x201000"],
    );
    assert_rocr_page_fault(&run, 2);
}

#[test]
fn vm_fault_message_can_be_silenced_but_the_process_still_aborts() {
    let run = simwork(
        "gfx1100",
        &[("HSA_ENABLE_VM_FAULT_MESSAGE", "0")],
        &["malloc:0x200000", "read:0:0:0x201000"],
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
            "malloc:0x200000",
            "read:0:0:4096",
            "read:0:0:0x201000",
            "read:0:0:4",
            "sync",
            "malloc:64",
        ],
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.rocr_message().is_none(), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("read:0:0:4096 -> 0"));
    assert!(out.contains("read:0:0:0x201000 -> 700"), "{out}");
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
        ev[0].starts_with("event type=0 addr=0x") && ev[0].ends_with("000 mask=0x1 event-thread"),
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
            "malloc:0x200000",
            "read:0:0:0x201000",
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
        &["handler:pass", "malloc:0x200000", "read:0:0:0x201000"],
    );
    assert!(run.stdout.contains("event type=0"), "{run:#?}");
    assert_rocr_page_fault(&run, 1);
}

#[test]
fn the_event_thread_handles_the_fault_while_the_application_goes_on() {
    let run = simwork(
        "gfx1010",
        &[],
        &[
            "handler:suppress",
            "malloc:0x200000",
            "readasync:0:0:0x201000",
            "malloc:4096",
            "sync",
        ],
    );
    let out = &run.stdout;
    assert!(out.contains("readasync:0:0:0x201000 -> 0"), "{run:#?}");
    assert!(out.contains("malloc:4096 -> 0"), "{run:#?}");
    assert!(out.contains("sync -> 719"), "{run:#?}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("event type=0") && l.ends_with("event-thread")),
        "{run:#?}"
    );
}

#[test]
fn registering_before_hsa_init_is_not_initialized() {
    let run = simwork("gfx1100", &[], &["early-handler"]);
    assert!(run.stdout.contains("early-handler -> 4107"), "{run:#?}");
}

// ---- seed-coherent (the seed's hypothesis) ----

#[test]
fn coherent_memory_faults_on_rdna1_and_rdna2_only_when_the_hypothesis_is_asked_for() {
    let seed = [("SIMGPU_FAULT_RULES", "default,seed-coherent")];
    for spec in ["gfx1010", "gfx1030"] {
        // Off by default: the seed's hypothesis has no upstream source.
        let run = simwork(spec, &[], &["hostmalloc:4096:0", "read:0:0:64"]);
        assert_eq!(run.code, Some(0), "{spec}: {run:#?}");
        for step in [
            "hostmalloc:4096:0",
            "hostmalloc:4096:0x40000000",
            "ext:4096:3",
            "managed:4096:1",
        ] {
            let run = simwork(spec, &seed, &[step, "read:0:0:64"]);
            assert_rocr_page_fault(&run, 1);
        }
        for step in ["hostmalloc:4096:0x80000000", "malloc:4096", "ext:4096:1"] {
            let run = simwork(spec, &seed, &[step, "read:0:0:64"]);
            assert_eq!(run.code, Some(0), "{spec} {step}: {run:#?}");
        }
        let run = simwork(
            spec,
            &seed,
            &["managed:4096:1", "advise:0:100", "read:0:0:64"],
        );
        assert_eq!(
            run.code,
            Some(0),
            "{spec}: coarse-grained SVM is fine: {run:#?}"
        );
        let run = simwork(
            spec,
            &seed,
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
        &seed,
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
        &[ov[0], ("SIMGPU_FAULT_RULES", "default,seed-coherent")],
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
fn the_runtime_buffer_oracle_catches_a_preload_that_rewrites_it() {
    // internal-coherence is a test oracle, off by default: no source shows such a buffer.
    let pre = program_with("rewrite_preload", &["-shared"]);
    let prog = program("simwork");
    let mut cmd = sim_command(&prog, "gfx1100");
    cmd.env("LD_PRELOAD", &pre)
        .env("SIMGPU_FAULT_RULES", "default,internal-coherence")
        .args(["malloc:4096", "read:0:0:64", "sync"]);
    let run = Run::from(cmd.output().unwrap());
    assert!(run.stdout.contains("read:0:0:64 -> 719"), "{run:#?}");
    assert!(run.rocr_message().is_none());
    let mut cmd = sim_command(&prog, "gfx1100");
    cmd.env("LD_PRELOAD", &pre)
        .args(["malloc:4096", "read:0:0:64"]);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, Some(0), "oracle off (the default): {run:#?}");
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
