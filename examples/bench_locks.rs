//! std::sync::Mutex against parking_lot::Mutex on the registry's hot path
//! (README, "Dependencies"): each operation locks a shard-sized table, finds
//! or places one page-aligned key by linear probing and unlocks, as
//! `Registry::insert`/`remove` do.
//!
//! - uncontended: one thread, ns per lock+probe+unlock (best of 5)
//! - contended: two threads on the same lock (the registry's worst case: two
//!   threads sharing a home shard), operations per second (best of 5)
//! - `--callgrind`: instructions per operation, uncontended, under
//!   `valgrind --tool=callgrind` (runs itself twice per lock with different
//!   counts, so start-up cancels out)
//!
//! `cargo run --release --example bench_locks [-- --callgrind]`

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

/// Slots of the table behind the lock: a shard holding a few dozen live
/// allocations.
const SLOTS: usize = 64;
const EMPTY: u64 = 0;

/// The registry's hash (murmur3's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x;
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// A small open-addressing table, half full, like a shard.
struct Table {
    keys: [u64; SLOTS],
    meta: [u64; SLOTS],
}

impl Table {
    fn new() -> Table {
        let mut t = Table {
            keys: [EMPTY; SLOTS],
            meta: [0; SLOTS],
        };
        for i in 0..SLOTS as u64 / 2 {
            t.toggle((1 << 44) + (i << 21));
        }
        t
    }

    /// Inserts the key if absent, removes it if present: the probe an insert
    /// or a remove does. (Removal leaves a hole rather than shifting.)
    fn toggle(&mut self, key: u64) {
        let mut i = (mix(key) as usize) % SLOTS;
        for _ in 0..SLOTS {
            match self.keys[i] {
                k if k == key => {
                    self.keys[i] = EMPTY;
                    return;
                }
                EMPTY => {
                    self.keys[i] = key;
                    self.meta[i] = key ^ 4096;
                    return;
                }
                _ => i = (i + 1) % SLOTS,
            }
        }
    }
}

/// The two locks, behind one interface.
trait Lock: Sync {
    const NAME: &'static str;
    fn new(t: Table) -> Self;
    fn op(&self, key: u64);
}

impl Lock for std::sync::Mutex<Table> {
    const NAME: &'static str = "std::sync::Mutex";
    fn new(t: Table) -> Self {
        std::sync::Mutex::new(t)
    }
    #[inline(never)]
    fn op(&self, key: u64) {
        // As the registry locks a shard: a poisoned lock is still used.
        self.lock().unwrap_or_else(|e| e.into_inner()).toggle(key);
    }
}

impl Lock for parking_lot::Mutex<Table> {
    const NAME: &'static str = "parking_lot::Mutex";
    fn new(t: Table) -> Self {
        parking_lot::Mutex::new(t)
    }
    #[inline(never)]
    fn op(&self, key: u64) {
        self.lock().toggle(key);
    }
}

fn key(thread: u64, i: u64) -> u64 {
    (1 << 44) + (thread << 40) + ((i % 4096) << 12)
}

/// Inserts a key, then removes it (as an allocation and its free do), so
/// the table stays half full.
fn run<L: Lock>(lock: &L, thread: u64, ops: u64) {
    for i in 0..ops {
        lock.op(black_box(key(thread, i / 2)));
    }
}

/// Nanoseconds per operation, one thread.
fn uncontended<L: Lock>(ops: u64) -> f64 {
    let lock = L::new(Table::new());
    let start = Instant::now();
    run(&lock, 0, ops);
    black_box(&lock);
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// Operations per second, two threads on one lock.
fn contended<L: Lock>(ops: u64) -> f64 {
    let lock = L::new(Table::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let lock = &lock;
            s.spawn(move || run(lock, t, ops));
        }
    });
    (2 * ops) as f64 / start.elapsed().as_secs_f64()
}

/// The probe alone, without a lock: what the lock adds is the rest.
struct NoLock(std::cell::UnsafeCell<Table>);

// SAFETY: only ever used by one thread (the uncontended case).
unsafe impl Sync for NoLock {}

impl Lock for NoLock {
    const NAME: &'static str = "no lock (probe only)";
    fn new(t: Table) -> Self {
        NoLock(std::cell::UnsafeCell::new(t))
    }
    #[inline(never)]
    fn op(&self, key: u64) {
        // SAFETY: one thread, no other reference alive.
        unsafe { &mut *self.0.get() }.toggle(key);
    }
}

/// Best of 5 rounds, the locks taking turns within each round so that a
/// busy machine slows them alike.
fn measure() {
    const ROUNDS: usize = 5;
    let mut best = [(f64::MAX, 0.0f64); 3];
    for _ in 0..ROUNDS {
        let ns = [
            uncontended::<NoLock>(10_000_000),
            uncontended::<std::sync::Mutex<Table>>(10_000_000),
            uncontended::<parking_lot::Mutex<Table>>(10_000_000),
        ];
        let per_s = [
            0.0,
            contended::<std::sync::Mutex<Table>>(2_000_000),
            contended::<parking_lot::Mutex<Table>>(2_000_000),
        ];
        for i in 0..3 {
            best[i] = (best[i].0.min(ns[i]), best[i].1.max(per_s[i]));
        }
    }
    let names = [
        NoLock::NAME,
        <std::sync::Mutex<Table> as Lock>::NAME,
        <parking_lot::Mutex<Table> as Lock>::NAME,
    ];
    for (i, (name, (ns, per_s))) in names.iter().zip(best).enumerate() {
        if i == 0 {
            println!("{name:<20} uncontended {ns:5.1} ns/op");
        } else {
            println!(
                "{name:<20} uncontended {ns:5.1} ns/op   2 threads, one lock {:6.1} M ops/s",
                per_s / 1e6
            );
        }
    }
}

/// Instructions callgrind counts for the whole run of `--only LOCK OPS`.
fn instructions(lock: &str, ops: u64) -> Option<u64> {
    let me = std::env::current_exe().ok()?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .args(["--only", lock, &ops.to_string()])
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("Collected :"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--only", lock, ops] => {
            let ops: u64 = ops.parse().expect("a count");
            match lock {
                "none" => run(&NoLock::new(Table::new()), 0, ops),
                "std" => run(
                    &<std::sync::Mutex<Table> as Lock>::new(Table::new()),
                    0,
                    ops,
                ),
                _ => run(
                    &<parking_lot::Mutex<Table> as Lock>::new(Table::new()),
                    0,
                    ops,
                ),
            }
        }
        ["--callgrind"] => {
            let (small, large) = (100_000, 1_100_000);
            for (lock, name) in [
                ("none", "no lock (probe only)"),
                ("std", "std::sync::Mutex"),
                ("parking_lot", "parking_lot::Mutex"),
            ] {
                match (instructions(lock, small), instructions(lock, large)) {
                    (Some(a), Some(b)) => println!(
                        "{name:<20} uncontended {:.1} instructions/op (callgrind)",
                        b.saturating_sub(a) as f64 / (large - small) as f64
                    ),
                    _ => println!("{name:<20} callgrind did not run (is valgrind installed?)"),
                }
            }
        }
        [] => measure(),
        _ => {
            eprintln!("usage: bench_locks [--callgrind]");
            std::process::exit(2);
        }
    }
}
