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
    let stripe = &COUNTERS[stripe_of(std::ptr::addr_of!(here) as usize)];
    stripe.0[stat as usize].fetch_add(n, Ordering::Relaxed);
}

/// The stack's 64 KiB region, hashed: glibc spaces thread stacks 8 MiB and a
/// guard page apart, so the region number's low bits are the same for every
/// thread (all of them on one cache line, no scaling: scripts/bench); a
/// Fibonacci hash takes the stripe from all of its bits.
fn stripe_of(stack_addr: usize) -> usize {
    ((stack_addr as u64 >> 16).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % STRIPES
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
    fn threads_spaced_like_glibc_stacks_get_different_stripes() {
        // Stacks of 8 MiB plus a 4 KiB guard page, one after another.
        let base = 0x7f00_0000_0000usize;
        let stripes: std::collections::HashSet<usize> = (0..8)
            .map(|t| stripe_of(base + t * ((8 << 20) + 4096) + 0x7000))
            .collect();
        assert!(stripes.len() >= 6, "{stripes:?}");
        // One thread's calls at nearby depths share a stripe.
        assert_eq!(stripe_of(base + 0x7000), stripe_of(base + 0x7800));
    }

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
