//! The counters of rocm_fix_get_stats. Striped (by the address of the
//! calling thread's stack, each stripe on its own cache line) so that
//! counting does not make threads that allocate at once fight over one cache
//! line; a read sums the stripes.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug)]
pub enum Stat {
    Intercepted = 0,
    Rewritten,
    Padded,
    PaddedBytes,
    Retried,
    Faults,
}

const STRIPES: usize = 16;

#[repr(align(64))]
struct Stripe([AtomicU64; 6]);

static COUNTERS: [Stripe; STRIPES] = [const { Stripe([const { AtomicU64::new(0) }; 6]) }; STRIPES];

/// The stripe is picked from the address of the caller's stack: threads have
/// stacks of their own, and a stack address needs no thread-local lookup
/// (one `__tls_get_addr` call in a dlopened library) on every hooked call.
#[inline]
pub fn add(stat: Stat, n: u64) {
    let here = 0u8;
    let stripe = &COUNTERS[(std::ptr::addr_of!(here) as usize >> 16) % STRIPES];
    stripe.0[stat as usize].fetch_add(n, Ordering::Relaxed);
}

pub fn total(stat: Stat) -> u64 {
    COUNTERS
        .iter()
        .map(|s| s.0[stat as usize].load(Ordering::Relaxed))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_add_up() {
        let before = total(Stat::Retried);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| (0..1000).for_each(|_| add(Stat::Retried, 1)));
            }
        });
        assert_eq!(total(Stat::Retried) - before, 8000);
    }
}
