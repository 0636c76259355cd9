//! A concurrent registry of live allocations, so that a GPU fault address can
//! be traced back to the allocation it ran past (fault forensics).
//!
//! Inserts and removes happen on every allocation and free, from any thread:
//! the table is split into 64 shards, each behind its own mutex. A thread
//! inserts into its own home shard, so two
//! threads allocating at once touch different locks and cache lines: a
//! shard chosen by address hash would make every lock line bounce between
//! cores (the home is a hash of the thread's descriptor, [`home_shard`]).
//! Removal looks in the home shard first (memory is usually freed by the
//! thread that allocated it), then in the others. Each shard is an
//! open-addressing (linear probing) table with separate key and value arrays,
//! 32 bytes per slot, grown by 1.5× at 80 % load (so about 53 % just after
//! growing) and shrunk to 50 % below 20 %: a live entry costs at most 64
//! bytes once a shard holds more than a handful. `locate` runs once per process
//! (on the first fault: ROCr's VMFaultHandler is not re-armed) and simply scans every shard.

use parking_lot::{Mutex, MutexGuard};
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};

/// This thread's home shard: a hash of its thread descriptor's address.
/// `pthread_self` is one load of the thread pointer; a Rust thread-local
/// costs a `__tls_get_addr` call in a dlopened library (the engine is one),
/// twice per allocation. glibc places each descriptor at the top of its
/// thread's stack, so descriptors lie a stack size (8 MiB and a guard page by
/// default) apart: a Fibonacci hash of the page number takes the shard from
/// all of the address's bits, not only the low ones that spacing makes equal.
pub fn home_shard() -> usize {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as u64;
    (mix(me) >> (64 - SHARD_BITS)) as usize
}

/// What made an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `hipMalloc` and friends (coarse VRAM).
    Device,
    /// `hipHostMalloc` / `hipHostAlloc` (pinned host memory).
    Host,
    /// `hipMallocManaged`.
    Managed,
    /// `hipExtMallocWithFlags`.
    ExtFine,
    /// `hsa_amd_memory_pool_allocate` called directly.
    Hsa,
    /// Anything else.
    Other,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Device,
        Kind::Host,
        Kind::Managed,
        Kind::ExtFine,
        Kind::Hsa,
        Kind::Other,
    ];

    fn index(self) -> u8 {
        Kind::ALL.iter().position(|&k| k == self).unwrap_or(5) as u8
    }

    fn from_index(i: u8) -> Kind {
        Kind::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Kind::Other)
    }

    /// Short name for reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Host => "host",
            Kind::Managed => "managed",
            Kind::ExtFine => "ext-fine",
            Kind::Hsa => "hsa",
            Kind::Other => "other",
        }
    }
}

/// One live allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alloc {
    /// Address returned to the caller.
    pub base: u64,
    /// Bytes the caller asked for.
    pub size: u64,
    /// Extra mapped bytes rocm-fix added after `size`.
    pub padding: u64,
    /// Which API made it.
    pub kind: Kind,
    /// HIP device ordinal (or -1 when not known).
    pub device: i32,
}

/// How far past an allocation's end `locate` still attributes an address:
/// ROCr's block size. Buffers are cut from 2 MiB blocks and only the page
/// after a block is unmapped (ROCR-Runtime amd_memory_region.h block_size_,
/// libhsakmt fmm.c guard pages), so an over-read faults at its block's end,
/// up to a block past the buffer's own end.
pub const LOCATE_WINDOW: u64 = 2 << 20;

/// The per-slot value, packed into 9 bytes so that a million live
/// allocations fit in 64 bytes each even while a table is being resized:
/// `word` = size (40 bits: up to 1 TiB) | padding (24 bits: bytes below
/// 8 MiB, else whole pages with bit 23 set); `tag` = kind (3 bits) | device + 1
/// (5 bits: -1 to 30; a larger ordinal is stored as unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    word: u64,
    tag: u8,
}

const SIZE_BITS: u32 = 40;
const PAD_PAGES: u64 = 1 << 23;

impl Meta {
    fn pack(size: u64, padding: u64, kind: Kind, device: i32) -> Meta {
        let size = size.min((1 << SIZE_BITS) - 1);
        let pad = if padding < PAD_PAGES {
            padding
        } else {
            PAD_PAGES | (padding / 4096).min(PAD_PAGES - 1)
        };
        let dev = if (-1..=30).contains(&device) {
            (device + 1) as u8
        } else {
            0
        };
        Meta {
            word: size | (pad << SIZE_BITS),
            tag: kind.index() | (dev << 3),
        }
    }

    fn size(self) -> u64 {
        self.word & ((1 << SIZE_BITS) - 1)
    }

    fn padding(self) -> u64 {
        let pad = self.word >> SIZE_BITS;
        if pad & PAD_PAGES != 0 {
            (pad & (PAD_PAGES - 1)) * 4096
        } else {
            pad
        }
    }

    fn kind(self) -> Kind {
        Kind::from_index(self.tag & 7)
    }

    fn device(self) -> i32 {
        i32::from(self.tag >> 3) - 1
    }
}

/// Key of a free slot; no live allocation has base address 0.
const EMPTY: u64 = 0;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
/// Smallest non-empty table per shard.
const MIN_CAP: usize = 8;

/// Fibonacci hashing of the page number: base addresses are at least
/// page-aligned, so the low 12 bits carry nothing; one multiply by 2^64/phi
/// spreads the rest into the high bits, which [`home`] and [`home_shard`] use.
fn mix(x: u64) -> u64 {
    (x >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Home slot in a table of `cap` slots, from the hash bits the shard did not use.
/// Multiply-shift instead of a mask, so capacities need not be powers of two.
fn home(key: u64, cap: usize) -> usize {
    let h = mix(key) << SHARD_BITS;
    ((u128::from(h) * cap as u128) >> 64) as usize
}

/// Bytes held by every table's arrays right now, and the most ever held at
/// once (a resize holds the old and the new arrays): for scripts/bench.
static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Arrays of at least this many bytes are mapped from the kernel and
/// unmapped when freed, so that memory goes back to the system after a mass
/// free (glibc keeps large freed blocks once its mmap threshold has grown).
const MAP_BYTES: usize = 64 << 10;

/// The slots of one table in one zeroed block (all-zero is empty): `cap`
/// keys, then `cap` packed words, then `cap` tags, 17 bytes a slot.
struct Slots {
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: Slots owns its memory; tables are behind their shard's mutex.
unsafe impl Send for Slots {}

const SLOT_BYTES: usize = 17;

impl Slots {
    const fn empty() -> Slots {
        Slots {
            ptr: std::ptr::null_mut(),
            cap: 0,
        }
    }

    /// `cap` empty slots, or None when memory cannot be had.
    fn zeroed(cap: usize) -> Option<Slots> {
        let bytes = Slots::block_bytes(cap)?;
        if bytes == 0 {
            return Some(Slots::empty());
        }
        let ptr = if bytes >= MAP_BYTES {
            // SAFETY: an anonymous private mapping, zero-filled by the kernel.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            p
        } else {
            // Whole cache lines of its own: two threads' small tables must
            // not share a line (the hot path would bounce it between cores).
            // SAFETY: a non-zero multiple of the alignment, zeroed below.
            let p = unsafe { libc::aligned_alloc(64, bytes) };
            if p.is_null() {
                return None;
            }
            // SAFETY: p holds `bytes` writable bytes.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
            p
        };
        let held = HELD.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK.fetch_max(held, Ordering::Relaxed);
        Some(Slots {
            ptr: ptr.cast(),
            cap,
        })
    }

    fn bytes(&self) -> usize {
        Slots::block_bytes(self.cap).unwrap_or(0)
    }

    /// The block for `cap` slots: mapped blocks in whole pages, others in
    /// whole cache lines.
    fn block_bytes(cap: usize) -> Option<usize> {
        let bytes = cap.checked_mul(SLOT_BYTES)?;
        if bytes >= MAP_BYTES {
            Some(bytes)
        } else {
            bytes.checked_next_multiple_of(64)
        }
    }

    fn keys(&self) -> &[u64] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: cap u64 at the start of the block (8-aligned by malloc/mmap).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u64>(), self.cap) }
    }

    fn keys_mut(&mut self) -> &mut [u64] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: as above, owned mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<u64>(), self.cap) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let bytes = self.bytes();
        if bytes == 0 {
            return;
        }
        HELD.fetch_sub(bytes, Ordering::Relaxed);
        // SAFETY: the block this Slots allocated, freed the way it was had.
        unsafe {
            if bytes >= MAP_BYTES {
                libc::munmap(self.ptr.cast(), bytes);
            } else {
                libc::free(self.ptr.cast());
            }
        }
    }
}

/// Bytes the registries' tables hold now and at most (peak), for scripts/bench.
pub fn held_bytes() -> (usize, usize) {
    (HELD.load(Ordering::Relaxed), PEAK.load(Ordering::Relaxed))
}

/// Where a key's probe run ends.
enum Probe {
    Found(usize),
    Free(usize),
    Full,
}

/// One shard: linear probing with backward-shift deletion (no tombstones).
/// Three parallel arrays of `cap` slots (17 bytes a slot); `len` counts
/// occupied slots.
#[doc(hidden)]
pub struct Table {
    slots: Slots,
    len: usize,
}

impl Table {
    const fn new() -> Table {
        Table {
            slots: Slots::empty(),
            len: 0,
        }
    }

    fn cap(&self) -> usize {
        self.slots.cap
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 >= self.cap() {
            0
        } else {
            i + 1
        }
    }

    fn meta(&self, i: usize) -> Option<Meta> {
        // SAFETY: i < cap, and each array holds cap elements.
        (i < self.cap()).then(|| unsafe {
            Meta {
                word: *self.slots.ptr.cast::<u64>().add(self.cap() + i),
                tag: *self.slots.ptr.add(16 * self.cap() + i),
            }
        })
    }

    fn set(&mut self, i: usize, key: u64, m: Meta) {
        if i < self.cap() {
            // SAFETY: i < cap, and each array holds cap elements.
            unsafe {
                *self.slots.ptr.cast::<u64>().add(i) = key;
                *self.slots.ptr.cast::<u64>().add(self.cap() + i) = m.word;
                *self.slots.ptr.add(16 * self.cap() + i) = m.tag;
            }
        }
    }

    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        match self.probe(key) {
            Probe::Found(i) => Some(i),
            Probe::Free(_) | Probe::Full => None,
        }
    }

    /// One pass along `key`'s probe run: its slot, or the free slot that
    /// ends the run. Bounded even if the table is completely full (growth
    /// failed).
    #[inline]
    fn probe(&self, key: u64) -> Probe {
        let keys = self.slots.keys();
        let cap = keys.len();
        if cap == 0 || key == EMPTY {
            return Probe::Full;
        }
        let mut i = home(key, cap);
        for _ in 0..cap {
            match keys.get(i).copied() {
                Some(k) if k == key => return Probe::Found(i),
                Some(EMPTY) => return Probe::Free(i),
                Some(_) => i = if i + 1 == cap { 0 } else { i + 1 },
                None => break,
            }
        }
        Probe::Full
    }

    fn get(&self, key: u64) -> Option<Alloc> {
        let i = self.find(key)?;
        self.meta(i).map(|m| to_alloc(key, &m))
    }

    /// Places a key known to be absent; false when no slot is free.
    fn place(&mut self, key: u64, meta: Meta) -> bool {
        let Probe::Free(i) = self.probe(key) else {
            return false;
        };
        self.set(i, key, meta);
        self.len += 1;
        true
    }

    /// Inserts or replaces (a reused base means the old block was freed
    /// behind our back). Returns the replaced entry. On allocation failure the
    /// table keeps working at a higher load; a full table drops the entry.
    #[inline]
    fn insert(&mut self, key: u64, meta: Meta) -> Option<Alloc> {
        match self.probe(key) {
            Probe::Found(i) => {
                let old = self.meta(i).map(|m| to_alloc(key, &m));
                self.set(i, key, meta);
                old
            }
            Probe::Free(i) if self.len.saturating_add(1).saturating_mul(5) <= self.cap() * 4 => {
                self.set(i, key, meta);
                self.len += 1;
                None
            }
            _ => {
                let want = self.cap().saturating_add(self.cap() / 2).max(MIN_CAP);
                self.resize(want);
                self.place(key, meta);
                None
            }
        }
    }

    #[inline(always)]
    fn remove(&mut self, key: u64) -> Option<Meta> {
        let i = self.find(key)?;
        let removed = self.meta(i)?;
        self.delete_at(i);
        // Give memory back after mass frees; hysteresis (grow at 80 %,
        // shrink below 20 % to 50 %) keeps this from thrashing. The smallest
        // table (MIN_CAP slots) is kept when it empties: a thread that
        // allocates and frees one buffer at a time would otherwise allocate
        // and free a table on every call.
        if self.cap() > MIN_CAP && self.len.saturating_mul(5) < self.cap() {
            self.resize(self.len.saturating_mul(2).max(MIN_CAP));
        }
        Some(removed)
    }

    /// Backward-shift deletion: pull later entries of the probe run into the
    /// hole unless that would move them before their home slot.
    #[inline]
    fn delete_at(&mut self, i: usize) {
        let cap = self.cap();
        let mut hole = i;
        let mut j = self.next(i);
        for _ in 1..cap {
            let Some(&k) = self.slots.keys().get(j) else {
                break;
            };
            if k == EMPTY {
                break;
            }
            let h = home(k, cap);
            // Does k's home lie cyclically in (hole, j]? Then it stays.
            let stays = if hole <= j {
                hole < h && h <= j
            } else {
                hole < h || h <= j
            };
            if !stays {
                if let Some(m) = self.meta(j) {
                    self.set(hole, k, m);
                }
                hole = j;
            }
            j = self.next(j);
        }
        if let Some(k) = self.slots.keys_mut().get_mut(hole) {
            *k = EMPTY;
            self.len = self.len.saturating_sub(1);
        }
    }

    /// Rehashes into `cap` slots; on allocation failure keeps the old table.
    fn resize(&mut self, cap: usize) {
        if cap < self.len {
            return;
        }
        let Some(slots) = Slots::zeroed(cap) else {
            return;
        };
        let mut new = Table { slots, len: 0 };
        for i in 0..self.cap() {
            let k = self.slots.keys()[i];
            if k != EMPTY {
                if let Some(m) = self.meta(i) {
                    new.place(k, m);
                }
            }
        }
        *self = new;
    }

    fn memory_bytes(&self) -> usize {
        self.slots.bytes()
    }

    /// Every live entry.
    fn entries(&self) -> impl Iterator<Item = Alloc> + '_ {
        (0..self.cap()).filter_map(move |i| {
            let k = *self.slots.keys().get(i)?;
            (k != EMPTY).then(|| self.meta(i).map(|m| to_alloc(k, &m)))?
        })
    }
}

fn to_alloc(base: u64, m: &Meta) -> Alloc {
    Alloc {
        base,
        size: m.size(),
        padding: m.padding(),
        kind: m.kind(),
        device: m.device(),
    }
}

/// A shard on its own cache line, so neighbouring locks do not false-share.
#[repr(align(64))]
struct Shard(Mutex<Table>);

/// The registry. `Registry::new()` is const, so it can live in a `static`.
pub struct Registry {
    shards: [Shard; SHARDS],
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry; allocates nothing until the first insert.
    pub const fn new() -> Registry {
        Registry {
            shards: [const { Shard(Mutex::new(Table::new())) }; SHARDS],
        }
    }

    /// The shard at `index` (always below SHARDS), locked. parking_lot's
    /// lock has no poisoning: a thread that panicked inside a shard left its
    /// table consistent (no table operation panics between its writes), so
    /// the others go on using it.
    #[inline]
    fn lock(&self, index: usize) -> MutexGuard<'_, Table> {
        self.shards[index % SHARDS].0.lock()
    }

    /// `f` on the home shard, then on every other one, until it finds something.
    #[inline]
    fn find<R>(&self, mut f: impl FnMut(&mut Table) -> Option<R>) -> Option<R> {
        let home = home_shard();
        if let Some(r) = f(&mut self.lock(home)) {
            return Some(r);
        }
        self.find_elsewhere(home, f)
    }

    /// Memory freed by another thread than the one that made it.
    #[cold]
    fn find_elsewhere<R>(
        &self,
        home: usize,
        mut f: impl FnMut(&mut Table) -> Option<R>,
    ) -> Option<R> {
        (0..SHARDS)
            .filter(|&i| i != home)
            .find_map(|i| f(&mut self.lock(i)))
    }

    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, Table>> {
        self.shards.iter().map(|s| s.0.lock())
    }

    /// Records a live allocation in this thread's home shard, replacing an
    /// entry with the same base there. A null base is ignored (nothing can
    /// be live there).
    #[inline]
    pub fn insert(&self, alloc: Alloc) {
        if alloc.base == EMPTY {
            return;
        }
        let meta = Meta::pack(alloc.size, alloc.padding, alloc.kind, alloc.device);
        self.lock(home_shard()).insert(alloc.base, meta);
    }

    /// Forgets the allocation at `base`, returning it if it was recorded.
    /// (Inline and without closures: it runs on every free.)
    #[inline(always)]
    pub fn remove(&self, base: u64) -> Option<Alloc> {
        if base == EMPTY {
            return None;
        }
        let home = home_shard();
        let found = self.lock(home).remove(base);
        let meta = match found {
            Some(m) => m,
            None => self.find_elsewhere(home, |t| t.remove(base))?,
        };
        Some(to_alloc(base, &meta))
    }

    /// The allocation recorded at exactly `base`.
    pub fn get(&self, base: u64) -> Option<Alloc> {
        if base == EMPTY {
            return None;
        }
        self.find(|t| t.get(base))
    }

    /// Holds every shard's lock until the guards are dropped: for tests of
    /// what happens when another thread is inside the registry.
    #[doc(hidden)]
    pub fn hold_all_locks(&self) -> Vec<MutexGuard<'_, Table>> {
        self.each_shard().collect()
    }

    /// Number of live entries (locks every shard in turn).
    pub fn len(&self) -> usize {
        self.each_shard().map(|t| t.len).sum()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the registry occupies: the shards plus their tables' heap arrays.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.each_shard().map(|t| t.memory_bytes()).sum::<usize>()
    }

    /// Explains a fault address.
    ///
    /// Returns the allocation whose mapped range `[base, base+size+padding)`
    /// contains `addr` or, failing that, the one whose end lies closest below
    /// `addr` and less than [`LOCATE_WINDOW`] (2 MiB) before it: the buffer a
    /// kernel ran past. GPU faults name the faulting page (amdkfd kfd_events.c), so
    /// `addr` is often page-aligned and past an end that is not.
    ///
    /// The `i64` is `addr - (base + size)`: negative inside the caller's
    /// bytes, 0 or more in the padding or beyond (saturated to the i64 range).
    pub fn locate(&self, addr: u64) -> Option<(Alloc, i64)> {
        // Inside: prefer the highest base (stale overlapping entries lose to
        // the most recent, innermost one). Past: the smallest gap, then the
        // highest base.
        let mut inside: Option<Alloc> = None;
        let mut past: Option<(u64, Alloc)> = None;
        for t in self.each_shard() {
            for a in t.entries() {
                let base = a.base;
                let end = base.saturating_add(a.size).saturating_add(a.padding);
                if base <= addr && addr < end {
                    let better = match inside {
                        None => true,
                        Some(i) => base > i.base,
                    };
                    if better {
                        inside = Some(a);
                    }
                } else if end <= addr {
                    let gap = addr - end;
                    let better = match past {
                        None => true,
                        Some((g, p)) => gap < g || (gap == g && base > p.base),
                    };
                    if gap < LOCATE_WINDOW && better {
                        past = Some((gap, a));
                    }
                }
            }
        }
        let found = inside.or(past.map(|(_, a)| a))?;
        let distance = i128::from(addr) - (i128::from(found.base) + i128::from(found.size));
        let distance =
            i64::try_from(distance).unwrap_or(if distance < 0 { i64::MIN } else { i64::MAX });
        Some((found, distance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn a(base: u64, size: u64, padding: u64) -> Alloc {
        Alloc {
            base,
            size,
            padding,
            kind: Kind::Device,
            device: 0,
        }
    }

    #[test]
    fn kind_names() {
        let names: Vec<_> = [
            Kind::Device,
            Kind::Host,
            Kind::Managed,
            Kind::ExtFine,
            Kind::Hsa,
            Kind::Other,
        ]
        .iter()
        .map(Kind::as_str)
        .collect();
        assert_eq!(
            names,
            ["device", "host", "managed", "ext-fine", "hsa", "other"]
        );
    }

    #[test]
    fn usable_as_a_static() {
        static R: Registry = Registry::new();
        R.insert(a(0x1000, 10, 0));
        assert_eq!(R.get(0x1000).map(|x| x.size), Some(10));
        assert_eq!(R.remove(0x1000).map(|x| x.size), Some(10));
        assert!(R.is_empty());
    }

    #[test]
    fn insert_get_remove() {
        let r = Registry::new();
        assert!(r.is_empty());
        let x = Alloc {
            base: 0x7f00_0000_0000,
            size: 12345,
            padding: MIB,
            kind: Kind::Host,
            device: 3,
        };
        r.insert(x);
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(x.base), Some(x));
        assert_eq!(r.get(x.base + 4096), None);
        assert_eq!(r.remove(x.base + 1), None);
        assert_eq!(r.remove(x.base), Some(x));
        assert_eq!(r.remove(x.base), None);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn same_base_replaces() {
        let r = Registry::new();
        r.insert(a(0x10000, 100, 0));
        r.insert(a(0x10000, 200, 4096));
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(0x10000), Some(a(0x10000, 200, 4096)));
    }

    #[test]
    fn null_base_is_ignored() {
        let r = Registry::new();
        r.insert(a(0, 100, 0));
        assert!(r.is_empty());
        assert_eq!(r.remove(0), None);
        assert_eq!(r.get(0), None);
    }

    #[test]
    fn many_inserts_and_removes_keep_every_entry_reachable() {
        // Exercises growth, backward-shift deletion and shrinking together.
        let r = Registry::new();
        let base = |i: u64| 0x7f00_0000_0000 + i * 0x20_0000;
        for i in 0..20_000 {
            r.insert(a(base(i), i + 1, 0));
        }
        for i in (0..20_000).filter(|i| i % 3 != 0) {
            assert_eq!(r.remove(base(i)).map(|x| x.size), Some(i + 1));
        }
        assert_eq!(r.len(), 6667);
        for i in 0..20_000 {
            assert_eq!(r.get(base(i)).is_some(), i % 3 == 0, "{i}");
        }
        for i in (0..20_000).filter(|i| i % 3 == 0) {
            assert!(r.remove(base(i)).is_some());
        }
        assert!(r.is_empty());
        // Empty shards hand their arrays back, down to the smallest table.
        assert!(
            r.memory_bytes() <= size_of::<Registry>() + SHARDS * MIN_CAP * 32,
            "{}",
            r.memory_bytes()
        );
    }

    #[test]
    fn many_keys_in_one_shard() {
        // One thread fills one shard: it still works (just with a bigger table).
        let r = Registry::new();
        let keys: Vec<u64> = (1..u64::MAX).step_by(4096).take(3000).collect();
        for &k in &keys {
            r.insert(a(k, 1, 0));
        }
        assert_eq!(r.len(), keys.len());
        for &k in keys.iter().rev() {
            assert_eq!(r.remove(k).map(|x| x.base), Some(k));
        }
        assert!(r.is_empty());
    }

    #[test]
    fn at_most_64_bytes_per_entry_up_to_a_million() {
        let r = Registry::new();
        let mut worst = 0.0f64;
        for i in 0..1_000_000u64 {
            r.insert(a(0x7000_0000_0000 + i * 0x1000, 4096, 0));
            // Check across the growth cycles, not only at the end.
            if (i + 1) % 50_000 == 0 {
                let per = r.memory_bytes() as f64 / r.len() as f64;
                worst = worst.max(per);
            }
        }
        assert_eq!(r.len(), 1_000_000);
        let per = r.memory_bytes() / r.len();
        assert!(per <= 64, "{per} bytes per entry");
        assert!(worst <= 64.0, "{worst} bytes per entry at some point");
        assert_eq!(
            r.get(0x7000_0000_0000 + 999_999 * 0x1000).map(|x| x.size),
            Some(4096)
        );
        // The last page is 4096 past the last allocation's end.
        let end = 0x7000_0000_0000 + 1_000_000 * 0x1000;
        let (x, d) = r.locate(end).unwrap();
        assert_eq!((x.base, d), (end - 0x1000, 0));
    }

    #[test]
    fn concurrent_inserts_and_removes() {
        let r = Registry::new();
        let threads = 8u64;
        let per = 20_000u64;
        std::thread::scope(|s| {
            for t in 0..threads {
                let r = &r;
                s.spawn(move || {
                    for i in 0..per {
                        let base = ((t + 1) << 40) + i * 0x1000;
                        r.insert(Alloc {
                            base,
                            size: i,
                            padding: 0,
                            kind: Kind::Managed,
                            device: t as i32,
                        });
                        // Lookups from other threads race with these inserts.
                        let _ = r.get(((threads - t) << 40) + i * 0x1000);
                        if i % 2 == 1 {
                            let gone = r.remove(base - 0x1000);
                            assert_eq!(gone.map(|x| x.size), Some(i - 1));
                        }
                    }
                });
            }
        });
        // Each thread removed the even-indexed entries it inserted.
        assert_eq!(r.len(), (threads * per / 2) as usize);
        for t in 0..threads {
            for i in 0..per {
                let got = r.get(((t + 1) << 40) + i * 0x1000);
                assert_eq!(got.is_some(), i % 2 == 1);
                if let Some(x) = got {
                    assert_eq!((x.size, x.device), (i, t as i32));
                }
            }
        }
    }

    #[test]
    fn memory_freed_by_another_thread_is_found() {
        let r = Registry::new();
        r.insert(a(0x9000_0000, 64, 4096));
        std::thread::scope(|s| {
            s.spawn(|| {
                // A new thread gets another home shard.
                assert_eq!(r.get(0x9000_0000).map(|x| x.padding), Some(4096));
                assert!(r.remove(0x9000_0000).is_some());
                assert!(r.remove(0x9000_0000).is_none());
            });
        });
        assert!(r.is_empty());
    }

    #[test]
    fn survives_a_thread_that_panicked_holding_a_shard() {
        let r = Registry::new();
        let base = 0x5000_0000u64;
        r.insert(a(base, 8, 0));
        let shard = &r.shards[home_shard()].0;
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = shard.lock();
                panic!("a panic while holding the shard");
            })
            .join()
        });
        // The guard was dropped while unwinding: the shard is free again.
        assert!(!shard.is_locked());
        assert_eq!(r.get(base).map(|x| x.size), Some(8));
        r.insert(a(base + 0x1000, 9, 0));
        assert_eq!(r.len(), 2);
        assert!(r.locate(base + 4).is_some());
        assert!(r.remove(base).is_some());
        assert!(r.memory_bytes() > 0);
    }

    #[test]
    fn locate_inside() {
        let r = Registry::new();
        let x = a(0x10_0000, 10_000, 0);
        r.insert(x);
        assert_eq!(r.locate(0x10_0000), Some((x, -10_000)));
        assert_eq!(r.locate(0x10_0000 + 9_999), Some((x, -1)));
        // Page-aligned address inside the allocation.
        assert_eq!(r.locate(0x10_1000), Some((x, 4096 - 10_000)));
    }

    #[test]
    fn locate_in_padding() {
        let r = Registry::new();
        let x = a(0x20_0000, 5000, MIB);
        r.insert(x);
        assert_eq!(r.locate(0x20_0000 + 5000), Some((x, 0)));
        // The fault page after the caller's bytes, inside the padding.
        assert_eq!(r.locate(0x20_2000), Some((x, 0x2000 - 5000)));
        assert_eq!(
            r.locate(0x20_0000 + 5000 + MIB - 1),
            Some((x, MIB as i64 - 1))
        );
    }

    #[test]
    fn locate_just_past_with_page_aligned_fault() {
        // 100 bytes: HIP maps the whole page; an over-read faults on the next
        // page, reported at its page-aligned address.
        let r = Registry::new();
        let x = a(0x7f12_3450_0000, 100, 0);
        r.insert(x);
        assert_eq!(r.locate(0x7f12_3450_1000), Some((x, 4096 - 100)));
        // Last byte of the window, then just out of it.
        let end = x.base + 100;
        let w = LOCATE_WINDOW;
        assert_eq!(w, 2 * MIB);
        assert_eq!(r.locate(end + w - 1), Some((x, w as i64 - 1)));
        assert_eq!(r.locate(end + w), None);
        // Before the allocation: nothing.
        assert_eq!(r.locate(x.base - 1), None);
        assert_eq!(r.locate(0), None);
    }

    #[test]
    fn locate_prefers_containing_then_closest_end() {
        let r = Registry::new();
        let first = a(0x100_0000, 0x1000, 0); // ends 0x100_1000
        let second = a(0x100_3000, 0x800, 0); // ends 0x100_3800
        let third = a(0x100_5000, 0x2000, 0);
        r.insert(first);
        r.insert(second);
        r.insert(third);
        // Between second and third: second's end is closest below.
        assert_eq!(r.locate(0x100_4000), Some((second, 0x800)));
        // Between first and second.
        assert_eq!(r.locate(0x100_2000), Some((first, 0x1000)));
        // Inside third even though second's end is within the window.
        assert_eq!(r.locate(0x100_6000), Some((third, -0x1000)));
        // Past third.
        assert_eq!(r.locate(0x100_7000), Some((third, 0)));
    }

    #[test]
    fn locate_on_empty_and_extreme_values() {
        let r = Registry::new();
        assert_eq!(r.locate(0x1000), None);
        // Sizes are kept up to 1 TiB and paddings in whole pages up to 32 GiB:
        // larger ones are stored saturated, and still found.
        let huge = a(1, u64::MAX, u64::MAX);
        r.insert(huge);
        let kept = a(1, (1 << 40) - 1, ((1 << 23) - 1) * 4096);
        assert_eq!(r.locate(2), Some((kept, 2 - (1 << 40))));
        let r = Registry::new();
        let top = a(u64::MAX - 4095, 4096, 0);
        r.insert(top);
        assert_eq!(r.locate(u64::MAX), Some((top, -1)));
        let r = Registry::new();
        let low = a(0x1000, 16, 0);
        r.insert(low);
        assert_eq!(r.locate(0x1000 + 16 + 3 * GIB), None);
    }

    #[test]
    fn entries_keep_what_was_recorded() {
        for (size, padding, kind, device) in [
            (10_000, 67_824, Kind::Device, 0),
            (2 << 20, 65_536 + 100, Kind::Hsa, -1),
            (1 << 39, (8 << 20) - 1, Kind::Managed, 30),
            (4096, 0, Kind::Other, 7),
        ] {
            let m = Meta::pack(size, padding, kind, device);
            assert_eq!(
                (m.size(), m.padding(), m.kind(), m.device()),
                (size, padding, kind, device)
            );
        }
        // 8 MiB and more: whole pages (rounded down); a 31st GPU: unknown.
        let m = Meta::pack(1, (1 << 30) + 123, Kind::Device, 31);
        assert_eq!((m.padding(), m.device()), (1 << 30, -1));
    }

    #[test]
    fn a_million_entries_cost_at_most_64_bytes_each_and_go_back_when_freed() {
        // (The resize peak, old and new arrays at once, is scripts/bench's.)
        let r = Registry::new();
        let n = 1_000_000u64;
        for i in 0..n {
            r.insert(a((1 << 44) + (i << 12), 4096, 0));
        }
        let held = r.memory_bytes();
        assert!(held as f64 / n as f64 <= 32.0, "{held} bytes");
        for i in 0..n {
            assert!(r.remove((1 << 44) + (i << 12)).is_some());
        }
        // What is left: the smallest table of each shard used.
        assert!(
            r.memory_bytes()
                <= size_of::<Registry>() + SHARDS * (MIN_CAP * SLOT_BYTES).next_multiple_of(64)
        );
    }

    #[test]
    fn memory_of_an_empty_registry_is_just_the_shards() {
        let r = Registry::new();
        assert_eq!(r.memory_bytes(), size_of::<Registry>());
        assert!(size_of::<Registry>() <= SHARDS * 64);
    }
}
