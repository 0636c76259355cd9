//! The sink: mapped memory after a block end, at no VRAM cost per buffer.
//!
//! A buffer whose end is (nearly) its block's end is followed by libhsakmt's
//! unmapped guard page ([`crate::policy::uncovered_end`]). Instead of padding
//! it (a 2 MiB PyTorch segment would take a 4 MiB block), the engine reserves
//! the address range right after the block with the runtime's own virtual
//! memory API (ROCm 6.0+: `hsa_amd_vmem_address_reserve` with the block end as
//! its address hint, which libhsakmt's mmap aperture grants there because the
//! guard gap is unmapped, not reserved), and maps onto it one small buffer per
//! device, shared by every sink. A kernel reading past the buffer then reads
//! the sink instead of faulting; writes land in the sink, which nobody owns.
//!
//! Every sink belongs to the buffers ending at its block end (a count): it is
//! unmapped and its range freed with the last of them. Nothing here is on the
//! hot path of a buffer that its block covers.

use crate::abi::*;
use crate::policy;
use crate::pools;
use crate::state::real_fn;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

struct Sink {
    owners: u32,
    size: usize,
    /// The size of each mapping of the shared buffer that fills the range.
    chunk: usize,
}

#[derive(Default)]
struct Books {
    /// block end -> the sink mapped there
    sinks: HashMap<u64, Sink>,
    /// buffer base -> the block end whose sink it uses
    owners: HashMap<u64, u64>,
    /// KFD node -> (handle, size) of the shared buffer every sink maps,
    /// repeated as often as the range needs
    handles: HashMap<u32, (u64, usize)>,
}

static BOOKS: Mutex<Option<Books>> = Mutex::new(None);
/// Buffers that own a sink: frees skip the lock while there are none.
static OWNERS: AtomicUsize = AtomicUsize::new(0);

/// Whether the runtime has the virtual memory API (asked once).
fn vmm_supported() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        let Some(get) = real_fn!(RealFn::HsaSystemGetInfo, HsaSystemGetInfoFn) else {
            return false;
        };
        let mut yes: u8 = 0;
        // SAFETY: a valid out-pointer for a bool attribute.
        let st = unsafe {
            get(
                policy::HSA_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED,
                (&mut yes as *mut u8).cast(),
            )
        };
        st == policy::HSA_STATUS_SUCCESS && yes != 0
    })
}

struct Vmem {
    reserve: HsaVmemReserveFn,
    free: HsaVmemFreeFn,
    create: HsaVmemCreateFn,
    map: HsaVmemMapFn,
    unmap: HsaVmemUnmapFn,
    access: HsaVmemSetAccessFn,
}

fn vmem() -> Option<Vmem> {
    Some(Vmem {
        reserve: real_fn!(RealFn::HsaVmemAddressReserve, HsaVmemReserveFn)?,
        free: real_fn!(RealFn::HsaVmemAddressFree, HsaVmemFreeFn)?,
        create: real_fn!(RealFn::HsaVmemHandleCreate, HsaVmemCreateFn)?,
        map: real_fn!(RealFn::HsaVmemMap, HsaVmemMapFn)?,
        unmap: real_fn!(RealFn::HsaVmemUnmap, HsaVmemUnmapFn)?,
        access: real_fn!(RealFn::HsaVmemSetAccess, HsaVmemSetAccessFn)?,
    })
}

/// Maps a sink of at least `cover` bytes at `end` for the buffer at `base`
/// on the GPU at KFD `node`, or shares the one already there. False when it
/// cannot (no VMM, the range is taken, the runtime refused, a forked child):
/// the caller pads instead.
pub fn attach(node: u32, base: u64, end: u64, cover: usize) -> bool {
    if crate::state::books().is_none() || !vmm_supported() {
        return false;
    }
    let Some(v) = vmem() else {
        return false;
    };
    let Some((agent, pool)) = pools::gpu_vram(node) else {
        return false;
    };
    let size = sink_size(cover);
    let mut guard = BOOKS.lock().unwrap_or_else(|e| e.into_inner());
    let books = guard.get_or_insert_with(Books::default);
    if let Some(s) = books.sinks.get_mut(&end) {
        if s.size >= size {
            s.owners += 1;
            books.owners.insert(base, end);
            OWNERS.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        return false;
    }
    // The range first: where it cannot be had, no VRAM is spent on a buffer.
    let mut va: *mut c_void = std::ptr::null_mut();
    // SAFETY: an out-pointer; `end` is only a hint to the runtime.
    if unsafe { (v.reserve)(&mut va, size, end, 0) } != policy::HSA_STATUS_SUCCESS {
        return false;
    }
    if va as u64 != end {
        // SAFETY: the range the runtime just reserved for us.
        unsafe { (v.free)(va, size) };
        return false;
    }
    // The shared buffer: the whole cover where it is small, else a slice of
    // the GPU's memory (1/256, at least 2 MiB) mapped again and again over the
    // range: a large ROCM_FIX_PAD costs address space, not the VRAM it names.
    let chunk = sink_chunk(size, pools::pool_size(pool));
    let handle = match books.handles.get(&node) {
        Some(&(h, hs)) if hs >= chunk => h,
        _ => {
            let mut h: u64 = 0;
            // SAFETY: the device's coarse VRAM pool, a page-multiple size, an out-pointer.
            let r = unsafe { (v.create)(pool, chunk, policy::HSA_MEMORY_TYPE_PINNED, 0, &mut h) };
            if r != policy::HSA_STATUS_SUCCESS {
                // SAFETY: our reservation.
                unsafe { (v.free)(va, size) };
                return false;
            }
            // The only VRAM a sink costs, once per device: counted as added.
            crate::stats::add(crate::stats::Stat::PaddedBytes, chunk as u64);
            books.handles.insert(node, (h, chunk));
            h
        }
    };
    let desc = HsaAccessDesc {
        permissions: policy::HSA_ACCESS_PERMISSION_RW,
        agent,
    };
    let mut done = 0;
    while done < size {
        let n = chunk.min(size - done);
        // SAFETY: a piece of our reservation, our handle.
        let at = unsafe { va.cast::<u8>().add(done) }.cast::<c_void>();
        if unsafe { (v.map)(at, n, 0, handle, 0) } != policy::HSA_STATUS_SUCCESS {
            break;
        }
        done += n;
    }
    // SAFETY: our fully mapped reservation, one access descriptor.
    if done < size || unsafe { (v.access)(va, size, &desc, 1) } != policy::HSA_STATUS_SUCCESS {
        unmap_chunks(&v, end, done, chunk);
        // SAFETY: our reservation.
        unsafe { (v.free)(va, size) };
        return false;
    }
    books.sinks.insert(
        end,
        Sink {
            owners: 1,
            size,
            chunk,
        },
    );
    books.owners.insert(base, end);
    OWNERS.fetch_add(1, Ordering::Relaxed);
    log::debug!("sink of {size} bytes after the block ending at {end:#x}");
    true
}

/// The buffer at `base` is being freed: its sink goes with the last owner.
/// (Inline: on every free, and nothing to do while no buffer owns a sink.)
#[inline]
pub fn detach(base: u64) {
    if OWNERS.load(Ordering::Relaxed) != 0 {
        detach_slow(base);
    }
}

#[cold]
fn detach_slow(base: u64) {
    if crate::state::books().is_none() {
        return;
    }
    let mut guard = BOOKS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(books) = guard.as_mut() else {
        return;
    };
    let Some(end) = books.owners.remove(&base) else {
        return;
    };
    OWNERS.fetch_sub(1, Ordering::Relaxed);
    let Some(s) = books.sinks.get_mut(&end) else {
        return;
    };
    s.owners -= 1;
    if s.owners > 0 {
        return;
    }
    let (size, chunk) = (s.size, s.chunk);
    books.sinks.remove(&end);
    if let Some(v) = vmem() {
        unmap_chunks(&v, end, size, chunk);
        // SAFETY: the reservation this sink made.
        unsafe { (v.free)(end as *mut c_void, size) };
    }
}

/// Unmaps the first `mapped` bytes of a sink at `end`, mapped in `chunk`s.
fn unmap_chunks(v: &Vmem, end: u64, mapped: usize, chunk: usize) {
    let mut off = 0;
    while off < mapped {
        let n = chunk.min(mapped - off);
        // SAFETY: a mapping this sink made.
        unsafe { (v.unmap)((end as usize + off) as *mut c_void, n) };
        off += n;
    }
}

/// The shared buffer's size for a sink of `size` bytes on a GPU with `vram`
/// bytes: all of it when it is at most 1/256 of the VRAM (at least 2 MiB),
/// else that much, mapped repeatedly.
pub fn sink_chunk(size: usize, vram: u64) -> usize {
    let cap = ((vram / 256) as usize).max(policy::ROCR_BLOCK as usize);
    let cap = cap / policy::PAGE * policy::PAGE;
    size.min(cap)
}

/// The size of the sink that covers `cover` bytes: whole pages.
pub fn sink_size(cover: usize) -> usize {
    cover.div_ceil(policy::PAGE).max(1) * policy::PAGE
}

/// Whether the buffer at `base` owns a sink (for tests and the journal).
pub fn owns(base: u64) -> bool {
    OWNERS.load(Ordering::Relaxed) > 0
        && BOOKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|b| b.owners.contains_key(&base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_cover_maps_a_small_buffer_many_times() {
        let gib = 1u64 << 30;
        assert_eq!(sink_chunk(65536, 8 * gib), 65536);
        assert_eq!(sink_chunk(1 << 30, 8 * gib), 32 << 20);
        assert_eq!(sink_chunk(1 << 30, 0), 2 << 20);
        assert_eq!(sink_size(1), 4096);
        assert_eq!(sink_size(65536), 65536);
    }
}
