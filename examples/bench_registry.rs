//! The registry's share of the hot path, for scripts/bench: insert+remove
//! throughput with one and two threads (a ratio near 2 means no global
//! lock), and memory per live entry at a million entries.
//!
//! `cargo run --release --example bench_registry`

use rocm_fix_engine::registry::{Alloc, Kind, Registry};
use std::time::Instant;

const OPS: u64 = 2_000_000;

fn churn(reg: &Registry, thread: u64) {
    // Page-aligned, distinct per thread, like real allocations.
    for i in 0..OPS {
        let base = ((thread << 40) | (i % 4096) << 12) + (1 << 44);
        reg.insert(Alloc {
            base,
            size: 4096,
            padding: 65536,
            kind: Kind::Device,
            device: 0,
        });
        reg.remove(base);
    }
}

fn throughput(threads: u64) -> f64 {
    let reg = Registry::new();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let reg = &reg;
            s.spawn(move || churn(reg, t));
        }
    });
    (OPS * threads) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // Best of three, one and two threads measured side by side.
    let best = |t| (0..3).map(|_| throughput(t)).fold(0.0, f64::max);
    let one = best(1);
    let two = best(2);
    println!(
        "registry insert+remove: 1 thread {one:.0}/s, 2 threads {two:.0}/s, ratio {:.2}",
        two / one
    );
    let reg = Registry::new();
    let n = 1_000_000u64;
    let base = |i: u64| (1 << 44) + (i << 12);
    for i in 0..n {
        reg.insert(Alloc {
            base: base(i),
            size: 4096,
            padding: 0,
            kind: Kind::Host,
            device: 0,
        });
    }
    let (_, peak) = rocm_fix_engine::registry::held_bytes();
    println!(
        "registry memory at {} live entries: {} bytes, {:.1} bytes/entry; resize peak {:.1} bytes/entry",
        reg.len(),
        reg.memory_bytes(),
        reg.memory_bytes() as f64 / reg.len() as f64,
        peak as f64 / n as f64
    );
    for i in 0..n {
        reg.remove(base(i));
    }
    let (held, _) = rocm_fix_engine::registry::held_bytes();
    println!(
        "registry memory after freeing all: {held} bytes held by the tables, {} kB resident",
        resident_kb()
    );
}

/// The process's resident set (VmRSS), in kB.
fn resident_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
