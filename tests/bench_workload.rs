//! The training workload of scripts/bench (issue 10,
//! tests/programs/BENCH-WORKLOAD.md): the trace has the published model sizes,
//! and the caching-allocator replay commits on the simulated RX 5700 XT exactly
//! the segments it asked for (every PyTorch segment is a whole number of ROCr's
//! 2 MiB blocks and its own KFD object).

mod common;
use common::*;
use std::process::Command;

fn trace(model: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(root().join("tests/programs/torch_trace.py"))
        .arg(model)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "torch_trace.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .to_string()
}

#[test]
fn the_traces_carry_the_published_parameter_counts() {
    let r = trace("resnet50", &["--summary"]);
    assert!(
        r.contains("# parameters 25557032 (102228128 bytes fp32) in 161 tensors"),
        "{r}"
    );
    assert!(r.contains("# model resnet50 batch 32 steps 3"), "{r}");
    let y = trace("yolov8s", &["--summary"]);
    assert!(y.contains("# parameters 11166560 "), "{y}");
    // a whole scale gives exactly that batch
    assert_eq!(
        trace("yolov8s", &["--scale", "0.5"]).replace("batch 8 ", ""),
        trace("yolov8s", &["--batch", "8"]).replace("batch 8 ", "")
    );
}

#[test]
fn the_replay_commits_exactly_its_segments_and_none_ends_before_mapped_memory() {
    let dir = root().join("target/test-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("resnet50-tiny.{}.trace", std::process::id()));
    std::fs::write(
        &path,
        trace("resnet50", &["--scale", "0.125", "--steps", "2"]),
    )
    .unwrap();
    let prog = program_with("torch_replay", &["-O2"]);
    let out = Command::new(&prog)
        .arg(&path)
        .envs(simgpu_env("gfx1010"))
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    let run = Run::from(out);
    assert_eq!(run.code, Some(0), "{run:?}");
    let line = run.stdout.trim();
    assert_eq!(field(line, "status"), "ok");
    assert_eq!(field(line, "steps"), "2");
    let committed: u64 = field(line, "peak_committed").parse().unwrap();
    let reserved: u64 = field(line, "peak_reserved").parse().unwrap();
    assert!(reserved > 0 && reserved.is_multiple_of(2 << 20), "{line}");
    assert_eq!(committed, reserved, "{line}");
    // without rocm-fix every segment ends at the end of its block: a guard page
    let segs = field(line, "peak_segments");
    assert_eq!(field(line, "cov4k"), format!("0/{segs}"), "{line}");
    assert_eq!(field(line, "rocm_fix_intercepted"), "-1", "{line}");
}
