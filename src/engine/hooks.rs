//! The hooks: what each one does, once the front has handed it the call.
//!
//! Decisions come from [`crate::policy`]; this module applies them to real
//! calls and keeps the books (registry, statistics) held by [`crate::state`].
//! Every entry point catches panics and then forwards the call unchanged:
//! nothing of ours may crash the application.

use crate::abi::*;
use crate::policy::{self, AdviseAction, HostAlloc};
use crate::registry::{Alloc, Kind};
use crate::state::{books, real, real_fn, snapshot, state, State, SERVICES};
use crate::stats::{self, Stat};
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static HANDLER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Runs `f`; on a panic, runs `fallback` (which forwards the call unchanged).
fn guarded<R>(f: impl FnOnce() -> R, fallback: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fallback())
}

/// One hook call's memory of its last real call, kept on the hook's own
/// stack (a thread-local would cost a `__tls_get_addr` call per access, the
/// engine being a dlopened library). Nested hooks (HIP's allocation calls
/// the HSA hook) each have their own.
pub(crate) struct Call {
    last: Cell<Option<i64>>,
}

impl Call {
    pub(crate) const fn new() -> Call {
        Call {
            last: Cell::new(None),
        }
    }

    /// Makes a real call, remembering its result for [`intercept`]. (Panics
    /// inside hooks are bugs of ours; this keeps one from allocating twice.)
    fn real<R: Copy + Into<i64>>(&self, call: impl FnOnce() -> R) -> R {
        let r = call();
        self.last.set(Some(r.into()));
        r
    }
}

/// Every hook's frame: count the call, decide with the state, and if
/// anything of ours panics, forward the call unchanged, unless the real
/// function already ran (through `cx`): then its result is the answer
/// (calling it again would allocate twice).
fn intercept<R: Copy + Into<i64> + TryFrom<i64>>(
    cx: &Call,
    forward: &dyn Fn() -> R,
    body: impl FnOnce(&'static State) -> R,
) -> R {
    guarded(
        || {
            stats::add(Stat::Intercepted, 1);
            body(state())
        },
        || match cx.last.get() {
            Some(v) => R::try_from(v).unwrap_or_else(|_| forward()),
            None => forward(),
        },
    )
}

/// The HIP device the calling thread allocates on. Asks HIP only when it
/// matters (several devices, some active).
fn current_device(st: &State) -> i32 {
    if st.devices.len() <= 1 || !st.any_active {
        return 0;
    }
    let mut d: c_int = 0;
    match real_fn!(RealFn::HipGetDevice, HipGetDeviceFn) {
        // SAFETY: a valid out-pointer.
        Some(f) if unsafe { f(&mut d) } == policy::HIP_SUCCESS => d,
        _ => -1,
    }
}

fn record(ptr: *mut *mut c_void, size: usize, padding: usize, kind: Kind, device: i32) {
    // SAFETY: the runtime wrote *ptr on success.
    let base = unsafe { *ptr } as u64;
    if let (true, Some(r)) = (base != 0, books()) {
        r.insert(Alloc {
            base,
            size: size as u64,
            padding: padding as u64,
            kind,
            device,
        });
    }
}

/// Allocates `size` plus padding with `alloc(size)`, falling back to exactly
/// `size` when the padded call fails: padding never turns a fitting
/// allocation into a failure.
/// HIP's last error is sticky (clr 6.x sets it on failure and only
/// hipGetLastError clears it): an attempt of ours that failed before a retry
/// that worked must not be left for the application's next hipGetLastError.
/// Taken before our first attempt; clears only if nothing was pending then.
/// (If the application had left an error pending, our failed attempt
/// replaces it: HIP has no call to put it back.)
pub struct LastError {
    clean_before: bool,
}

impl LastError {
    fn before(hip: bool) -> LastError {
        let clean_before = hip
            && real_fn!(RealFn::HipPeekAtLastError, HipLastErrorFn)
                // SAFETY: no arguments.
                .is_some_and(|peek| unsafe { peek() } == policy::HIP_SUCCESS);
        LastError { clean_before }
    }

    fn retried_ok(&self) {
        if self.clean_before {
            if let Some(get) = real_fn!(RealFn::HipGetLastError, HipLastErrorFn) {
                // SAFETY: no arguments; reads and clears our own failure.
                unsafe { get() };
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn padded_alloc(
    cx: &Call,
    st: &State,
    ptr: *mut *mut c_void,
    size: usize,
    kind: Kind,
    device: i32,
    rewritten: bool,
    alloc: impl Fn(usize, bool) -> c_int,
) -> c_int {
    let pad = st.cfg.pad_bytes;
    // HSA allocations (Kind::Hsa) return a status and keep no error state.
    let errors = LastError::before(kind != Kind::Hsa && (pad > 0 || rewritten));
    // Managed memory may live in VRAM: its padding counts against the same
    // budget as device memory's (HSA system-memory pools' does not).
    let budgeted = kind == Kind::Managed;
    let padded = (pad > 0)
        .then(|| policy::padded_size(size, pad))
        .flatten()
        .filter(|&total| {
            !budgeted || padding_budget_allows(st, st.device_node(device), (total - size) as u64)
        });
    if let Some(total) = padded {
        let r = cx.real(|| alloc(total, rewritten));
        if r != policy::HIP_SUCCESS && budgeted {
            release_padding((total - size) as u64);
        }
        if r == policy::HIP_SUCCESS {
            stats::add(Stat::Padded, 1);
            stats::add(Stat::PaddedBytes, (total - size) as u64);
            if rewritten {
                stats::add(Stat::Rewritten, 1);
            }
            record(ptr, size, total - size, kind, device);
            return r;
        }
        stats::add(Stat::Retried, 1);
    } else if rewritten {
        let r = cx.real(|| alloc(size, true));
        if r == policy::HIP_SUCCESS {
            stats::add(Stat::Rewritten, 1);
            record(ptr, size, 0, kind, device);
            return r;
        }
        stats::add(Stat::Retried, 1);
    } else {
        return finish(cx.real(|| alloc(size, false)), ptr, size, kind, device);
    }
    let r = finish(cx.real(|| alloc(size, false)), ptr, size, kind, device);
    if r == policy::HIP_SUCCESS {
        errors.retried_ok();
    }
    r
}

/// VRAM held by padded allocations (a padded buffer holds its padding until
/// it is freed).
static PADDED_VRAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether `pad` more bytes of padding fit the budget: at most 1/32 of the
/// GPU's memory in all, so that however large `ROCM_FIX_PAD` is, padding
/// never takes the room a workload that fits without rocm-fix needs. Past
/// it, buffers are kept exactly as asked, and the user is told once. (The
/// budget is reserved here; the caller gives it back if the attempt fails.)
fn padding_budget_allows(st: &State, node: Option<u32>, pad: u64) -> bool {
    let vram = node
        .and_then(crate::pools::gpu_vram)
        .map_or(0, |(_, pool)| crate::pools::pool_size(pool));
    let before = PADDED_VRAM.fetch_add(pad, Ordering::Relaxed);
    if policy::within_padding_budget(vram, before, pad) {
        return true;
    }
    release_padding(pad);
    static SAID: AtomicBool = AtomicBool::new(false);
    if !st.secure && !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "rocm-fix: padding stopped at {} MiB, {}: ROCM_FIX_PAD={} asks for more than it can \
             spare; further buffers that end at their block's end are left as they are.",
            policy::padding_budget(vram) >> 20,
            if vram == 0 {
                "1/32 of a 4 GiB GPU (this GPU's memory size is unknown)"
            } else {
                "1/32 of this GPU's memory"
            },
            rocm_fix_shared::config::show_size(st.cfg.pad_bytes)
        );
    }
    false
}

/// A freed padded buffer's padding leaves the budget (device, fine-grained
/// and managed memory are charged when padded). A sink's buffer is not
/// padding; an application's own HSA allocation keeps its share of the budget
/// after it is freed (the registry does not tell a VRAM pool's from a system
/// pool's, and only the former was charged), which only makes it stricter.
fn give_back_padding(a: &Alloc) {
    if a.padding > 0
        && matches!(a.kind, Kind::Device | Kind::ExtFine | Kind::Managed)
        && !crate::sink::owns(a.base)
    {
        release_padding(a.padding);
    }
}

/// Takes `pad` bytes off the padding budget (never below zero).
fn release_padding(pad: u64) {
    let _ = PADDED_VRAM.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(pad))
    });
}

/// Frees, with the real hipFree, an allocation of ours the caller never saw
/// (the exact one a padded allocation replaced).
fn hip_free_ours(p: *mut c_void) {
    if let Some(free) = real_fn!(RealFn::HipFree, HipFreeFn) {
        // SAFETY: an allocation of ours, made by the runtime's allocator.
        unsafe { free(p) };
    }
}

/// The same with the real hsa_amd_memory_pool_free.
fn hsa_free_ours(p: *mut c_void) {
    if let Some(free) = real_fn!(RealFn::HsaPoolFree, HsaPoolFreeFn) {
        // SAFETY: an allocation of ours, made by the runtime's allocator.
        unsafe { free(p) };
    }
}

/// Device memory (VRAM): what padding every allocation used to do, done only
/// where it is needed. The allocation is made exactly as asked; a buffer that
/// its own block covers (the rest of the 2 MiB block follows it, mapped) needs
/// nothing. One that ends within `cover` bytes of its block's end gets a sink
/// after the block ([`crate::sink`], no VRAM per buffer) or, where that cannot
/// be had, is replaced by a padded allocation. A padded attempt that fails
/// keeps the exact one: rocm-fix never turns an allocation that fits into a
/// failure. `rewritten`: the first attempt uses rewritten flags and falls back
/// to the caller's.
#[allow(clippy::too_many_arguments)]
fn device_alloc(
    cx: &Call,
    st: &State,
    ptr: *mut *mut c_void,
    size: usize,
    kind: Kind,
    device: i32,
    node: Option<u32>,
    granule: u64,
    rewritten: bool,
    alloc: impl Fn(usize, bool) -> c_int,
    free: impl Fn(*mut c_void),
) -> c_int {
    let mut rw = rewritten;
    let mut r = cx.real(|| alloc(size, rw));
    if r != policy::HIP_SUCCESS && rewritten {
        // HIP's last error is sticky up to 6.x: our failed rewritten attempt
        // must not be left for the application (see LastError).
        let errors = LastError::before(kind != Kind::Hsa);
        stats::add(Stat::Retried, 1);
        rw = false;
        r = cx.real(|| alloc(size, false));
        if r == policy::HIP_SUCCESS {
            errors.retried_ok();
        }
    }
    if r != policy::HIP_SUCCESS {
        return r;
    }
    if rw {
        stats::add(Stat::Rewritten, 1);
    }
    let cover = st.cfg.pad_bytes;
    // SAFETY: the runtime wrote *ptr on success.
    let base = unsafe { *ptr } as u64;
    let Some(end) = (cover > 0)
        .then(|| policy::uncovered_end(base, size as u64, cover as u64, granule))
        .flatten()
    else {
        record(ptr, size, 0, kind, device);
        return r;
    };
    let tail = (end - base - size as u64) as usize;
    if node.is_some_and(|n| crate::sink::attach(n, base, end, cover)) {
        stats::add(Stat::Padded, 1);
        record(
            ptr,
            size,
            tail + crate::sink::sink_size(cover),
            kind,
            device,
        );
        return r;
    }
    // No sink: a padded allocation instead of this one, or this one as it is.
    // Not while the application has an error pending (HIP 7 keeps it until
    // read): a failed attempt of ours would replace it, and HIP has no call to
    // put it back; its next hipGetLastError must be what it is without us.
    let exact = unsafe { *ptr };
    let errors = LastError::before(kind != Kind::Hsa);
    let pending = kind != Kind::Hsa && !errors.clean_before;
    if let Some(total) = (!pending)
        .then(|| policy::padded_size(size, policy::fallback_pad(cover)))
        .flatten()
        .filter(|&total| padding_budget_allows(st, node, (total - size) as u64))
    {
        let r2 = cx.real(|| alloc(total, rw));
        if r2 == policy::HIP_SUCCESS {
            free(exact);
            stats::add(Stat::Padded, 1);
            stats::add(Stat::PaddedBytes, (total - size) as u64);
            record(ptr, size, total - size, kind, device);
            return r2;
        }
        release_padding((total - size) as u64);
        stats::add(Stat::Retried, 1);
        // SAFETY: the caller's out-pointer: it gets the exact allocation back.
        unsafe { *ptr = exact };
        errors.retried_ok();
    }
    record(ptr, size, tail, kind, device);
    cx.last.set(Some(r.into()));
    r
}

fn finish(r: c_int, ptr: *mut *mut c_void, size: usize, kind: Kind, device: i32) -> c_int {
    if r == policy::HIP_SUCCESS {
        record(ptr, size, 0, kind, device);
    }
    r
}

// ---- HIP hooks ------------------------------------------------------------------

unsafe extern "C" fn hip_malloc(ptr: *mut *mut c_void, size: usize) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMalloc, HipAlloc) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY (all calls of f below): the caller's arguments, or a larger size.
    let forward = || cx.real(|| unsafe { f(ptr, size) });
    intercept(&cx, &forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let dev = current_device(st);
        if !st.active_for(dev) {
            return finish(forward(), ptr, size, Kind::Device, dev);
        }
        device_alloc(
            &cx,
            st,
            ptr,
            size,
            Kind::Device,
            dev,
            st.device_node(dev),
            st.granule,
            false,
            // SAFETY: the caller's pointer, the size as decided.
            |n, _| unsafe { f(ptr, n) },
            hip_free_ours,
        )
    })
}

/// After an allocation the runtime shaped (pitched, 3-D, stream-ordered):
/// records it and, if it ends within the cover of its block's end, gives it
/// a sink. No padded replacement: the call's own geometry (pitch, pool
/// block) would change; where no sink can be had it stays as it is.
fn protect_in_place(st: &State, ptr: *mut c_void, size: usize, device: i32) {
    let base = ptr as u64;
    let cover = st.cfg.pad_bytes;
    let node = st.device_node(device);
    let padding = match (cover > 0)
        .then(|| policy::uncovered_end(base, size as u64, cover as u64, st.granule))
        .flatten()
    {
        Some(end) if node.is_some_and(|n| crate::sink::attach(n, base, end, cover)) => {
            stats::add(Stat::Padded, 1);
            (end - base - size as u64) as usize + crate::sink::sink_size(cover)
        }
        _ => 0,
    };
    let mut p = ptr;
    record(&mut p, size, padding, Kind::Device, device);
}

/// The frame of every hook in this family: forward, then, on an active
/// device, protect what came back (`size` reads it from the call's outputs).
fn shaped_alloc(
    cx: &Call,
    forward: &dyn Fn() -> c_int,
    ptr: impl Fn() -> *mut c_void,
    size: impl Fn() -> usize,
) -> c_int {
    intercept(cx, forward, |st| {
        if !st.tracking {
            return forward();
        }
        let dev = current_device(st);
        let r = forward();
        let p = ptr();
        if r != policy::HIP_SUCCESS || p.is_null() {
            return r;
        }
        if st.active_for(dev) {
            protect_in_place(st, p, size(), dev);
        } else {
            let mut q = p;
            record(&mut q, size(), 0, Kind::Device, dev);
        }
        r
    })
}

unsafe extern "C" fn hip_malloc_pitch(
    ptr: *mut *mut c_void,
    pitch: *mut usize,
    width: usize,
    height: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMallocPitch, HipMallocPitchFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments; outputs read only after success.
    let forward = || cx.real(|| unsafe { f(ptr, pitch, width, height) });
    if ptr.is_null() || pitch.is_null() {
        return forward();
    }
    shaped_alloc(
        &cx,
        &forward,
        || unsafe { *ptr },
        || unsafe { *pitch }.saturating_mul(height),
    )
}

unsafe extern "C" fn hip_mem_alloc_pitch(
    ptr: *mut *mut c_void,
    pitch: *mut usize,
    width: usize,
    height: usize,
    elem: u32,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMemAllocPitch, HipMemAllocPitchFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments; outputs read only after success.
    let forward = || cx.real(|| unsafe { f(ptr, pitch, width, height, elem) });
    if ptr.is_null() || pitch.is_null() {
        return forward();
    }
    shaped_alloc(
        &cx,
        &forward,
        || unsafe { *ptr },
        || unsafe { *pitch }.saturating_mul(height),
    )
}

unsafe extern "C" fn hip_malloc_3d(p: *mut HipPitchedPtr, extent: HipExtent) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMalloc3D, HipMalloc3DFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments; outputs read only after success.
    let forward = || cx.real(|| unsafe { f(p, extent) });
    if p.is_null() {
        return forward();
    }
    shaped_alloc(
        &cx,
        &forward,
        || unsafe { (*p).ptr },
        || {
            unsafe { (*p).pitch }
                .saturating_mul(extent.height)
                .saturating_mul(extent.depth)
        },
    )
}

unsafe extern "C" fn hip_malloc_async(
    ptr: *mut *mut c_void,
    size: usize,
    stream: *mut c_void,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMallocAsync, HipMallocAsyncFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, size, stream) });
    if ptr.is_null() || size == 0 {
        return forward();
    }
    shaped_alloc(&cx, &forward, || unsafe { *ptr }, || size)
}

unsafe extern "C" fn hip_malloc_from_pool_async(
    ptr: *mut *mut c_void,
    size: usize,
    pool: *mut c_void,
    stream: *mut c_void,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMallocFromPoolAsync, HipMallocFromPoolFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, size, pool, stream) });
    if ptr.is_null() || size == 0 {
        return forward();
    }
    shaped_alloc(&cx, &forward, || unsafe { *ptr }, || size)
}

/// Every free's frame: count the call, take the buffer off the books (its
/// padding back to the budget, its sink detached), then free it with `free`;
/// if anything of ours panics before, the buffer is still freed.
#[inline(always)]
fn freeing<R>(ptr: *mut c_void, free: impl Fn() -> R) -> R {
    guarded(
        || {
            stats::add(Stat::Intercepted, 1);
            if state().tracking && !ptr.is_null() {
                if let Some(a) = books().and_then(|r| r.remove(ptr as u64)) {
                    give_back_padding(&a);
                }
                crate::sink::detach(ptr as u64);
            }
            free()
        },
        &free,
    )
}

unsafe extern "C" fn hip_free_async(ptr: *mut c_void, stream: *mut c_void) -> c_int {
    let Some(f) = real_fn!(RealFn::HipFreeAsync, HipFreeAsyncFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    // SAFETY: the caller's arguments.
    freeing(ptr, || unsafe { f(ptr, stream) })
}

unsafe fn free_with(id: RealFn, ptr: *mut c_void) -> c_int {
    let Some(f) = real_fn!(id, HipFreeFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    // SAFETY: the caller's pointer.
    freeing(ptr, || unsafe { f(ptr) })
}

unsafe extern "C" fn hip_free(ptr: *mut c_void) -> c_int {
    unsafe { free_with(RealFn::HipFree, ptr) }
}
unsafe extern "C" fn hip_host_free(ptr: *mut c_void) -> c_int {
    unsafe { free_with(RealFn::HipHostFree, ptr) }
}
unsafe extern "C" fn hip_free_host(ptr: *mut c_void) -> c_int {
    unsafe { free_with(RealFn::HipFreeHost, ptr) }
}

/// hipHostMalloc(ptr, size, flags) with `new` flags, falling back to the
/// caller's flags when the rewritten call fails.
fn host_malloc_as(
    cx: &Call,
    f: HipAllocFlags,
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    new: u32,
    st: &State,
) -> c_int {
    // SAFETY: the caller's arguments with other flags.
    let call = |fl: u32| cx.real(|| unsafe { f(ptr, size, fl) });
    let mut errors = None;
    if new != flags {
        errors = Some(LastError::before(true));
        let r = call(new);
        if r == policy::HIP_SUCCESS {
            stats::add(Stat::Rewritten, 1);
            record(ptr, size, 0, Kind::Host, -1);
            return r;
        }
        stats::add(Stat::Retried, 1);
    }
    let r = call(flags);
    if r == policy::HIP_SUCCESS && st.tracking {
        record(ptr, size, 0, Kind::Host, -1);
    }
    if let (true, Some(e)) = (r == policy::HIP_SUCCESS, errors) {
        e.retried_ok();
    }
    r
}

unsafe extern "C" fn hip_host_malloc(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipHostMalloc, HipAllocFlags) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, size, flags) });
    intercept(&cx, &forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        // Pinned host memory is judged by the device the thread works with.
        let new = if st.active_for(current_device(st))
            && policy::host_malloc_is_coherent(flags, st.host_coherent)
            && crate::callers::may_rewrite(caller)
        {
            policy::host_malloc_flags(flags)
        } else {
            flags
        };
        host_malloc_as(&cx, f, ptr, size, flags, new, st)
    })
}

/// HIP_VERSION of the running runtime (major*10000000 + minor*100000 + patch).
fn runtime_version() -> Option<i32> {
    static V: OnceLock<Option<i32>> = OnceLock::new();
    *V.get_or_init(|| {
        let f = real_fn!(RealFn::HipRuntimeGetVersion, HipRuntimeGetVersionFn)?;
        let mut v: c_int = 0;
        // SAFETY: a valid out-pointer.
        (unsafe { f(&mut v) } == policy::HIP_SUCCESS).then_some(v)
    })
}

/// The frame of the (ptr, size, flags) allocation hooks: a call that is not
/// ours to decide (`leave`, not tracking, no pointer, nothing asked) is
/// forwarded; on a GPU rocm-fix leaves alone the allocation is only recorded,
/// as `kind`; on an active one, `body` decides, given the call's context, the
/// real function, the device and the plain forward.
fn flagged_alloc(
    id: RealFn,
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    kind: Kind,
    leave: bool,
    body: impl FnOnce(&Call, &'static State, HipAllocFlags, i32, &dyn Fn() -> c_int) -> c_int,
) -> c_int {
    let Some(f) = real_fn!(id, HipAllocFlags) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, size, flags) });
    intercept(&cx, &forward, |st| {
        if leave || !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let dev = current_device(st);
        if !st.active_for(dev) {
            return finish(forward(), ptr, size, kind, dev);
        }
        body(&cx, st, f, dev, &forward)
    })
}

unsafe extern "C" fn hip_host_alloc(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    // On a GPU rocm-fix leaves alone: host or device memory, depending on the
    // release: not asked (no call of our own on a GPU we do not work for).
    let id = RealFn::HipHostAlloc;
    flagged_alloc(
        id,
        ptr,
        size,
        flags,
        Kind::Other,
        false,
        |cx, st, f, dev, forward| {
            // Up to 6.2 hipHostAlloc returns coarse VRAM (clr hip_memory.cpp): nothing to
            // rewrite, but it is device memory like hipMalloc's, so it is padded.
            if runtime_version().is_none_or(|v| v < 60_300_000) {
                return device_alloc(
                    cx,
                    st,
                    ptr,
                    size,
                    Kind::Device,
                    dev,
                    st.device_node(dev),
                    st.granule,
                    false,
                    // SAFETY: the caller's pointer and flags, the size as decided.
                    |n, _| unsafe { f(ptr, n, flags) },
                    hip_free_ours,
                );
            }
            if !crate::callers::may_rewrite(caller) {
                return finish(forward(), ptr, size, Kind::Host, dev);
            }
            match (
                policy::host_alloc_flags(flags),
                real_fn!(RealFn::HipHostMalloc, HipAllocFlags),
            ) {
                (HostAlloc::UseHostMalloc(new), Some(hm)) => {
                    let errors = LastError::before(true);
                    // SAFETY: hipHostMalloc with the caller's pointer and size.
                    let r = cx.real(|| unsafe { hm(ptr, size, new) });
                    if r == policy::HIP_SUCCESS {
                        stats::add(Stat::Rewritten, 1);
                        record(ptr, size, 0, Kind::Host, -1);
                        return r;
                    }
                    stats::add(Stat::Retried, 1);
                    let r = forward();
                    if r == policy::HIP_SUCCESS {
                        errors.retried_ok();
                    }
                    r
                }
                _ => forward(),
            }
        },
    )
}

unsafe extern "C" fn hip_ext_malloc_with_flags(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let kind = if flags == policy::HIP_DEVICE_MALLOC_DEFAULT {
        Kind::Device
    } else {
        Kind::ExtFine
    };
    let signal = flags == policy::HIP_MALLOC_SIGNAL_MEMORY;
    let id = RealFn::HipExtMallocWithFlags;
    flagged_alloc(id, ptr, size, flags, kind, signal, |cx, st, f, dev, _| {
        // A request the runtime would refuse is not turned into a success, and
        // RCCL's or OpenMP offload's uncached flags stay uncached.
        let new = if crate::callers::may_rewrite(caller)
            && policy::ext_malloc_rewrite_ok(flags, runtime_version(), st.fine_pool_visible)
        {
            policy::ext_malloc_flags(flags)
        } else {
            flags
        };
        device_alloc(
            cx,
            st,
            ptr,
            size,
            kind,
            dev,
            st.device_node(dev),
            st.granule,
            new != flags,
            // SAFETY: the caller's pointer; the size and flags as decided.
            |n, rw| unsafe { f(ptr, n, if rw { new } else { flags }) },
            hip_free_ours,
        )
    })
}

unsafe extern "C" fn hip_malloc_managed(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let id = RealFn::HipMallocManaged;
    flagged_alloc(
        id,
        ptr,
        size,
        flags,
        Kind::Managed,
        false,
        |cx, st, f, dev, _| {
            // SAFETY: the caller's pointer and flags, a padded size.
            let r = padded_alloc(
                cx,
                st,
                ptr,
                size,
                Kind::Managed,
                dev,
                false,
                |n, _| unsafe { f(ptr, n, flags) },
            );
            if r == policy::HIP_SUCCESS && crate::callers::may_rewrite(caller) {
                make_coarse(ptr, size, dev);
            }
            r
        },
    )
}

/// Managed memory is coherent by KFD's default (amdkfd kfd_svm.c): ask for
/// coarse-grained coherence over the whole range, padding included.
fn make_coarse(ptr: *mut *mut c_void, size: usize, dev: i32) {
    let Some(advise) = real_fn!(RealFn::HipMemAdvise, HipMemAdviseFn) else {
        return;
    };
    // SAFETY: the allocation just succeeded, so *ptr is its base.
    let base = unsafe { *ptr };
    let span = books()
        .and_then(|r| r.get(base as u64))
        .map(|a| (a.size + a.padding) as usize)
        .unwrap_or(size);
    // SAFETY: the range HIP just allocated.
    if unsafe {
        advise(
            base,
            span,
            policy::HIP_MEM_ADVISE_SET_COARSE_GRAIN,
            dev.max(0),
        )
    } == policy::HIP_SUCCESS
    {
        stats::add(Stat::Rewritten, 1);
    }
}

unsafe extern "C" fn hip_mem_advise(
    ptr: *const c_void,
    count: usize,
    advice: c_int,
    device: c_int,
    caller: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMemAdvise, HipMemAdviseFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, count, advice, device) });
    intercept(&cx, &forward, |st| {
        match policy::mem_advise(advice) {
            AdviseAction::Replace(new)
                if st.active_for(device) && crate::callers::may_rewrite(caller) =>
            {
                stats::add(Stat::Rewritten, 1);
                log::debug!("hipMemAdvise {advice} on {ptr:p} replaced by {new}");
                // SAFETY: the caller's arguments with another advice.
                cx.real(|| unsafe { f(ptr, count, new, device) })
            }
            _ => forward(),
        }
    })
}

// ---- HSA hooks ----------------------------------------------------------------------

unsafe extern "C" fn hsa_init() -> u32 {
    let Some(f) = real_fn!(RealFn::HsaInit, HsaInitFn) else {
        return policy::HSA_STATUS_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: no arguments.
    let forward = || cx.real(|| unsafe { f() });
    // The real hsa_init runs first: on a panic of ours afterwards, its result
    // is the answer (intercept does not call it again).
    intercept(&cx, &forward, |st| {
        let r = forward();
        if r == policy::HSA_STATUS_SUCCESS
            && st.tracking
            && !HANDLER_REGISTERED.swap(true, Ordering::AcqRel)
        {
            crate::forensics::register_handler();
        }
        r
    })
}

unsafe extern "C" fn hsa_pool_allocate(
    pool: u64,
    size: usize,
    flags: u32,
    ptr: *mut *mut c_void,
    caller: usize,
) -> u32 {
    let Some(f) = real_fn!(RealFn::HsaPoolAllocate, HsaPoolAllocateFn) else {
        return policy::HSA_STATUS_ERROR_NOT_INITIALIZED;
    };
    // The runtime's own allocations (and HIP's, already handled at the HIP
    // level) pass untouched, before anything else is done: every hipMalloc
    // comes through here once more.
    if crate::callers::is_runtime(caller) {
        // SAFETY: the caller's arguments.
        return unsafe { f(pool, size, flags, ptr) };
    }
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(pool, size, flags, ptr) });
    intercept(&cx, &forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let plan = crate::pools::plan(pool, st);
        if !plan.active {
            let r = forward();
            if r == policy::HSA_STATUS_SUCCESS {
                record(ptr, size, 0, Kind::Hsa, plan.device);
            }
            return r;
        }
        if let Some(node) = crate::pools::vram_node(pool) {
            // Flagged VRAM (PCIE, CONTIGUOUS, EXECUTABLE) is an object of its own.
            let granule = if flags == 0 {
                st.granule
            } else {
                policy::PAGE64
            };
            return device_alloc(
                &cx,
                st,
                ptr,
                size,
                Kind::Hsa,
                plan.device,
                Some(node),
                granule,
                plan.coarse.is_some(),
                |n, rw| {
                    let p = if rw {
                        plan.coarse.unwrap_or(pool)
                    } else {
                        pool
                    };
                    // SAFETY: the caller's pointer and flags; a pool of the same agent.
                    unsafe { f(p, n, flags, ptr) as c_int }
                },
                hsa_free_ours,
            ) as u32;
        }
        let r = padded_alloc(
            &cx,
            st,
            ptr,
            size,
            Kind::Hsa,
            plan.device,
            plan.coarse.is_some(),
            |n, rw| {
                let p = if rw {
                    plan.coarse.unwrap_or(pool)
                } else {
                    pool
                };
                // SAFETY: the caller's pointer and flags; a pool of the same agent.
                unsafe { f(p, n, flags, ptr) as c_int }
            },
        );
        r as u32
    })
}

unsafe extern "C" fn hsa_pool_free(ptr: *mut c_void, caller: usize) -> u32 {
    let Some(f) = real_fn!(RealFn::HsaPoolFree, HsaPoolFreeFn) else {
        return policy::HSA_STATUS_ERROR_NOT_INITIALIZED;
    };
    // The runtime frees what hipFree already took off the books.
    if crate::callers::is_runtime(caller) {
        // SAFETY: the caller's pointer.
        return unsafe { f(ptr) };
    }
    // SAFETY: the caller's pointer.
    freeing(ptr, || unsafe { f(ptr) })
}

/// An application's own SVM attributes: a fine-grained (coherent) GLOBAL_FLAG
/// is set coarse-grained instead, as managed memory is (amdkfd kfd_svm.c). The
/// runtime's own calls (hipMemAdvise, hipMallocManaged) pass untouched: the
/// HIP hooks already decided those.
unsafe extern "C" fn hsa_svm_attributes_set(
    ptr: *mut c_void,
    size: usize,
    list: *mut [u64; 2],
    count: usize,
    caller: usize,
) -> u32 {
    let Some(f) = real_fn!(RealFn::HsaSvmAttributesSet, HsaSvmSetFn) else {
        return policy::HSA_STATUS_ERROR_NOT_INITIALIZED;
    };
    let cx = Call::new();
    // SAFETY: the caller's arguments.
    let forward = || cx.real(|| unsafe { f(ptr, size, list, count) });
    intercept(&cx, &forward, |st| {
        // The runtime validates what it is given: a list longer than any real
        // one (there are fewer than 16 attributes) is passed through as is.
        if !st.any_active
            || list.is_null()
            || count == 0
            || count > 64
            || crate::callers::is_runtime(caller)
        {
            return forward();
        }
        // SAFETY: the caller passes `count` attribute pairs at `list`.
        let attrs = unsafe { std::slice::from_raw_parts(list, count) };
        let mut copy = attrs.to_vec();
        let mut changed = false;
        for pair in &mut copy {
            if let Some(v) = policy::svm_global_flag(pair[0], pair[1]) {
                pair[1] = v;
                changed = true;
            }
        }
        if !changed {
            return forward();
        }
        // SAFETY: the same call with our copy of the list.
        let r = cx.real(|| unsafe { f(ptr, size, copy.as_mut_ptr(), count) });
        if r == policy::HSA_STATUS_SUCCESS {
            stats::add(Stat::Rewritten, 1);
            return r;
        }
        stats::add(Stat::Retried, 1);
        forward()
    })
}

unsafe extern "C" fn get_stats(out: *mut c_void, size: usize) -> c_int {
    let s = snapshot();
    if !out.is_null() {
        let n = size.min(std::mem::size_of::<Stats>());
        // SAFETY: the caller provides `size` writable bytes at `out`.
        unsafe {
            std::ptr::copy_nonoverlapping((&s as *const Stats).cast::<u8>(), out.cast::<u8>(), n)
        };
    }
    0
}

static HOOKS: EngineHooks = EngineHooks {
    abi_version: ABI_VERSION,
    hip_malloc,
    hip_free,
    hip_host_malloc,
    hip_host_alloc,
    hip_host_free,
    hip_free_host,
    hip_malloc_managed,
    hip_ext_malloc_with_flags,
    hip_mem_advise,
    hsa_init,
    hsa_pool_allocate,
    hsa_pool_free,
    hsa_svm_attributes_set,
    get_stats,
    hip_malloc_pitch,
    hip_malloc_3d,
    hip_mem_alloc_pitch,
    hip_malloc_async,
    hip_malloc_from_pool_async,
    hip_free_async,
};

/// Gives the front the HIP runtime's code range and the real HSA allocate
/// and free, so that the runtime's own nested calls skip the engine.
/// The HIP runtime's code range, found from hipGetDevice: not from one of
/// the functions AMD's builds dispatch through their API table, whose first
/// lookup decides that route (the front's apitable.rs) and must happen in a
/// HIP hook, not when the engine loads.
fn tell_front_the_runtime(s: &FrontServices) {
    let (hip, alloc, free) = (
        real(RealFn::HipGetDevice),
        real(RealFn::HsaPoolAllocate),
        real(RealFn::HsaPoolFree),
    );
    if hip == 0 || alloc == 0 || free == 0 {
        return;
    }
    if let Some((lo, hi)) = crate::callers::text_range(hip) {
        // SAFETY: the front's own function, for its statics.
        unsafe { (s.set_runtime)(lo, hi, alloc, free) };
    }
}

/// The engine's one export, called once by the front.
///
/// # Safety
/// `services` must point to the front's 'static [`FrontServices`].
#[no_mangle]
pub unsafe extern "C" fn rocm_fix_engine_init(
    services: *const FrontServices,
) -> *const EngineHooks {
    // SAFETY: the front passes its 'static table.
    match unsafe { services.as_ref() } {
        Some(s) if s.abi_version == ABI_VERSION => {
            SERVICES.store(services as *mut FrontServices, Ordering::Release);
            // Decide now: with nothing to do here, the front forwards on its own.
            let tracking = guarded(|| state().tracking, || false);
            if tracking {
                guarded(|| tell_front_the_runtime(s), || ());
            }
            if tracking || s.passthrough.is_null() {
                &HOOKS
            } else {
                log::debug!("passthrough: no active GPU and not observing");
                s.passthrough
            }
        }
        _ => std::ptr::null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic of ours forwards the call, but never runs the real function a
    /// second time (that would allocate twice).
    #[test]
    fn a_panic_after_the_real_call_returns_its_result() {
        let forwarded = Cell::new(0);
        let cx = Call::new();
        let forward = || {
            forwarded.set(forwarded.get() + 1);
            cx.real(|| 7i32)
        };
        let r = intercept(&cx, &forward, |_| {
            let r = cx.real(|| 5i32);
            if r == 5 {
                panic!("a bug of ours after the allocation");
            }
            r
        });
        assert_eq!((r, forwarded.get()), (5, 0));
        let cx = Call::new();
        let r = intercept(&cx, &forward, |_| -> i32 {
            panic!("a bug of ours before it")
        });
        assert_eq!((r, forwarded.get()), (7, 1));
    }
}
