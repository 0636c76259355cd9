//! The engine: what each hook does, once the front has handed it the call.
//!
//! Decisions come from [`crate::policy`]; this module applies them to real
//! calls and keeps the books (registry, statistics). Every entry point
//! catches panics and then forwards the call unchanged: nothing of ours may
//! crash the application.

use crate::config::{self, Config};
use crate::engine_abi::*;
use crate::policy::{self, AdviseAction, HostAlloc, Mode};
use crate::process;
use crate::registry::{Alloc, Kind, Registry};
use crate::stats::{self, Stat};
use crate::topology::{self, Family};
use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::OnceLock;

/// Everything decided once, on the first hooked call.
pub struct State {
    pub cfg: Config,
    pub secure: bool,
    /// Real chip of each HIP device ordinal, in the order HIP numbers them.
    pub devices: Vec<(u32, Family)>,
    /// Rewrites and padding apply to device i.
    pub active: Vec<bool>,
    pub any_active: bool,
    /// Registry and fault handler in use (active somewhere, or observe mode).
    pub tracking: bool,
    /// Every GPU of the topology, by KFD node (HSA agents name their node).
    pub gpus: Vec<topology::Gpu>,
    /// The runtime's HIP_HOST_COHERENT=1 (hipHostMalloc then allocates
    /// coherent memory for more flags; facts §3).
    pub host_coherent: bool,
    /// The runtime's HSA_FORCE_FINE_GRAIN_PCIE=1 (the fine VRAM pool is visible).
    pub fine_pool_visible: bool,
}

impl State {
    /// Decides, from the configuration and the real chips, what rocm-fix does.
    pub fn new(
        cfg: Config,
        secure: bool,
        gpus: Vec<topology::Gpu>,
        devices: Vec<(u32, Family)>,
    ) -> State {
        let active: Vec<bool> = devices
            .iter()
            .map(|&(_, f)| policy::active(cfg.mode, f))
            .collect();
        let any_active = active.iter().any(|&a| a);
        let tracking = any_active || cfg.mode == Mode::Observe;
        let runtime_var = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                == Some(1)
        };
        State {
            cfg,
            secure,
            devices,
            active,
            any_active,
            tracking,
            gpus,
            host_coherent: runtime_var("HIP_HOST_COHERENT"),
            fine_pool_visible: runtime_var("HSA_FORCE_FINE_GRAIN_PCIE"),
        }
    }

    /// Whether rewrites apply to the GPU at KFD `node`.
    pub fn node_active(&self, node: u32) -> bool {
        self.gpus
            .iter()
            .find(|g| g.node == node)
            .is_some_and(|g| policy::active(self.cfg.mode, topology::family(g.gfx_target_version)))
    }

    fn active_for(&self, device: i32) -> bool {
        usize::try_from(device)
            .ok()
            .and_then(|d| self.active.get(d))
            .copied()
            .unwrap_or(self.any_active)
    }
}

static SERVICES: AtomicPtr<FrontServices> = AtomicPtr::new(std::ptr::null_mut());
static STATE: OnceLock<State> = OnceLock::new();
static REGISTRY: Registry = Registry::new();
/// Set in the child of a fork: another thread may have held a registry lock
/// at the fork, and nothing would ever release it in the child. The child
/// keeps rewriting and padding but keeps no books (its GPU state is not
/// usable anyway), and its exit handlers never wait for a lock.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    FORKED_CHILD.store(true, Ordering::Relaxed);
}

/// Registers [`after_fork_in_child`] (once).
pub fn install_fork_guard() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a plain extern "C" function that only stores a flag.
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    });
}

/// The registry, unless this is a forked child.
pub fn books() -> Option<&'static Registry> {
    (!FORKED_CHILD.load(Ordering::Relaxed)).then_some(&REGISTRY)
}
static HANDLER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Real functions already resolved: the front's resolver is a call away,
/// this is a load (the hot path asks for several per allocation).
static REAL_SEEN: [std::sync::atomic::AtomicUsize; REAL.len()] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; REAL.len()];

/// A function known to be missing from a runtime that is loaded.
const MISSING: usize = 1;

/// The real function `id`, or 0.
#[inline]
pub fn real(id: RealFn) -> usize {
    let slot = REAL_SEEN.get(id as usize);
    match slot.map(|s| s.load(Ordering::Relaxed)) {
        Some(MISSING) => return 0,
        Some(p) if p != 0 => return p,
        _ => {}
    }
    let s = SERVICES.load(Ordering::Acquire);
    // SAFETY: set once to the front's 'static services table.
    let p = match unsafe { s.as_ref() } {
        // SAFETY: the front's resolver takes any id and returns 0 when unknown.
        Some(s) => unsafe { (s.resolve)(id as u32) },
        None => 0,
    };
    // A miss is remembered only once the library is known to be loaded (its
    // first function resolved): before that, it may simply not be loaded yet.
    let anchor = match REAL.get(id as usize).map(|r| r.2) {
        Some(Lib::Hip) => RealFn::HipMalloc,
        _ => RealFn::HsaInit,
    };
    let loaded = anchor != id
        && REAL_SEEN
            .get(anchor as usize)
            .is_some_and(|a| a.load(Ordering::Relaxed) > MISSING);
    if let Some(slot) = slot {
        if p != 0 {
            slot.store(p, Ordering::Relaxed);
        } else if loaded {
            slot.store(MISSING, Ordering::Relaxed);
        }
    }
    p
}

macro_rules! real_fn {
    ($id:expr, $t:ty) => {
        match real($id) {
            0 => None,
            // SAFETY: the front resolved the real function of this signature.
            f => Some(unsafe { std::mem::transmute::<usize, $t>(f) }),
        }
    };
}

pub fn state() -> &'static State {
    STATE.get_or_init(|| {
        let secure = process::secure_execution();
        let file = std::fs::read_to_string(config::SYSTEM_CONFIG).ok();
        let env = |k: &str| std::env::var(k).ok();
        let (cfg, warnings) = config::from_sources(file.as_deref(), &env, secure);
        for w in &warnings {
            eprintln!("{w}");
        }
        crate::logging::init(cfg.log_filter.as_deref());
        let root = process::topology_root(secure);
        let gpus = topology::read_topology(std::path::Path::new(&root));
        let visible = process::visible_devices(&env, secure);
        let devices = process::hip_devices(&gpus, visible.as_deref());
        let st = State::new(cfg, secure, gpus, devices);
        if st.cfg.stats {
            // SAFETY: registering a plain extern "C" function; at exit only.
            unsafe { libc::atexit(print_stats_at_exit) };
        }
        if st.tracking {
            install_fork_guard();
        }
        log::debug!(
            "rocm-fix {}: mode {}, devices {:?}, active {:?}",
            crate::VERSION,
            st.cfg.mode.as_str(),
            st.devices,
            st.active
        );
        st
    })
}

extern "C" fn print_stats_at_exit() {
    if let Some(st) = STATE.get().filter(|st| !st.tracking) {
        eprintln!(
            "rocm-fix: passthrough (mode {}, no GPU it applies to): nothing was changed",
            st.cfg.mode.as_str()
        );
        return;
    }
    let s = snapshot();
    eprintln!(
        "rocm-fix: intercepted {} rewritten {} padded {} ({} bytes) retried {} faults {} live {}",
        s.intercepted,
        s.rewritten,
        s.padded,
        s.padded_bytes,
        s.retried,
        s.faults,
        s.live_allocations
    );
}

pub fn snapshot() -> Stats {
    let mut version = [0u8; 16];
    let v = crate::VERSION.as_bytes();
    let n = v.len().min(15);
    version[..n].copy_from_slice(&v[..n]);
    Stats {
        intercepted: stats::total(Stat::Intercepted),
        rewritten: stats::total(Stat::Rewritten),
        padded: stats::total(Stat::Padded),
        padded_bytes: stats::total(Stat::PaddedBytes),
        retried: stats::total(Stat::Retried),
        faults: stats::total(Stat::Faults),
        version,
        live_allocations: books().map_or(0, |r| r.len() as u64),
    }
}

/// Runs `f`; on a panic, runs `fallback` (which forwards the call unchanged).
fn guarded<R>(f: impl FnOnce() -> R, fallback: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fallback())
}

std::thread_local! {
    /// The result of the last real call made by the hook running on this
    /// thread (None: none yet).
    static LAST_REAL: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

/// Makes a real call, remembering its result for [`intercept`]. (Panics
/// inside hooks are bugs of ours; this keeps one from allocating twice.)
fn real_call<R: Copy + Into<i64>>(call: impl FnOnce() -> R) -> R {
    let r = call();
    let _ = LAST_REAL.try_with(|c| c.set(Some(r.into())));
    r
}

/// Every hook's frame: count the call, decide with the state, and if
/// anything of ours panics, forward the call unchanged, unless the real
/// function already ran: then its result is the answer (calling it again
/// would allocate twice).
fn intercept<R: Copy + Into<i64> + TryFrom<i64>>(
    forward: &dyn Fn() -> R,
    body: impl FnOnce(&'static State) -> R,
) -> R {
    // Hooks nest (HIP's allocation calls the HSA hook): keep the outer one's.
    let outer = LAST_REAL.try_with(|c| c.take()).ok().flatten();
    let r = guarded(
        || {
            stats::add(Stat::Intercepted, 1);
            body(state())
        },
        || match LAST_REAL.try_with(|c| c.get()).ok().flatten() {
            Some(v) => R::try_from(v).unwrap_or_else(|_| forward()),
            None => forward(),
        },
    );
    let _ = LAST_REAL.try_with(|c| c.set(outer));
    r
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

fn padded_alloc(
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
    if let Some(total) = (pad > 0).then(|| policy::padded_size(size, pad)).flatten() {
        let r = real_call(|| alloc(total, rewritten));
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
        let r = real_call(|| alloc(size, true));
        if r == policy::HIP_SUCCESS {
            stats::add(Stat::Rewritten, 1);
            record(ptr, size, 0, kind, device);
            return r;
        }
        stats::add(Stat::Retried, 1);
    } else {
        return finish(real_call(|| alloc(size, false)), ptr, size, kind, device);
    }
    let r = finish(real_call(|| alloc(size, false)), ptr, size, kind, device);
    if r == policy::HIP_SUCCESS {
        errors.retried_ok();
    }
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
    // SAFETY (all calls of f below): the caller's arguments, or a larger size.
    let forward = || real_call(|| unsafe { f(ptr, size) });
    intercept(&forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let dev = current_device(st);
        if !st.active_for(dev) {
            return finish(forward(), ptr, size, Kind::Device, dev);
        }
        padded_alloc(st, ptr, size, Kind::Device, dev, false, |n, _| unsafe {
            f(ptr, n)
        })
    })
}

unsafe fn free_with(id: RealFn, ptr: *mut c_void) -> c_int {
    let Some(f) = real_fn!(id, HipFreeFn) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    guarded(
        || {
            stats::add(Stat::Intercepted, 1);
            if state().tracking && !ptr.is_null() {
                if let Some(r) = books() {
                    r.remove(ptr as u64);
                }
            }
            // SAFETY: the caller's pointer.
            unsafe { f(ptr) }
        },
        // SAFETY: as above.
        || unsafe { f(ptr) },
    )
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
    f: HipAllocFlags,
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    new: u32,
    st: &State,
) -> c_int {
    // SAFETY: the caller's arguments with other flags.
    let call = |fl: u32| real_call(|| unsafe { f(ptr, size, fl) });
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
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, size, flags) });
    intercept(&forward, |st| {
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
        host_malloc_as(f, ptr, size, flags, new, st)
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

unsafe extern "C" fn hip_host_alloc(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipHostAlloc, HipAllocFlags) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, size, flags) });
    intercept(&forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let dev = current_device(st);
        if !st.active_for(dev) {
            // Host or device memory, depending on the release: not asked here
            // (no call of our own on a GPU we do not work for).
            return finish(forward(), ptr, size, Kind::Other, dev);
        }
        // Up to 6.2 hipHostAlloc returns coarse VRAM (facts §3): nothing to
        // rewrite, but it is device memory like hipMalloc's, so it is padded.
        if runtime_version().is_none_or(|v| v < 60_300_000) {
            // SAFETY: the caller's pointer and flags, a padded size.
            return padded_alloc(st, ptr, size, Kind::Device, dev, false, |n, _| unsafe {
                f(ptr, n, flags)
            });
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
                let r = real_call(|| unsafe { hm(ptr, size, new) });
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
    })
}

unsafe extern "C" fn hip_ext_malloc_with_flags(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipExtMallocWithFlags, HipAllocFlags) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, size, flags) });
    intercept(&forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 || flags == policy::HIP_MALLOC_SIGNAL_MEMORY {
            return forward();
        }
        let dev = current_device(st);
        let kind = if flags == policy::HIP_DEVICE_MALLOC_DEFAULT {
            Kind::Device
        } else {
            Kind::ExtFine
        };
        if !st.active_for(dev) {
            return finish(forward(), ptr, size, kind, dev);
        }
        // A request the runtime would refuse is not turned into a success, and
        // RCCL's or OpenMP offload's uncached flags stay uncached.
        let new = if crate::callers::may_rewrite(caller)
            && policy::ext_malloc_rewrite_ok(flags, runtime_version(), st.fine_pool_visible)
        {
            policy::ext_malloc_flags(flags)
        } else {
            flags
        };
        // SAFETY: the caller's pointer; the size and flags as decided.
        padded_alloc(st, ptr, size, kind, dev, new != flags, |n, rw| unsafe {
            f(ptr, n, if rw { new } else { flags })
        })
    })
}

unsafe extern "C" fn hip_malloc_managed(
    ptr: *mut *mut c_void,
    size: usize,
    flags: u32,
    caller: usize,
) -> c_int {
    let Some(f) = real_fn!(RealFn::HipMallocManaged, HipAllocFlags) else {
        return policy::HIP_ERROR_NOT_INITIALIZED;
    };
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, size, flags) });
    intercept(&forward, |st| {
        if !st.tracking || ptr.is_null() || size == 0 {
            return forward();
        }
        let dev = current_device(st);
        if !st.active_for(dev) {
            return finish(forward(), ptr, size, Kind::Managed, dev);
        }
        // SAFETY: the caller's pointer and flags, a padded size.
        let r = padded_alloc(st, ptr, size, Kind::Managed, dev, false, |n, _| unsafe {
            f(ptr, n, flags)
        });
        if r == policy::HIP_SUCCESS && crate::callers::may_rewrite(caller) {
            make_coarse(ptr, size, dev);
        }
        r
    })
}

/// Managed memory is coherent by KFD's default (facts §3): ask for
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
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, count, advice, device) });
    intercept(&forward, |st| {
        match policy::mem_advise(advice) {
            AdviseAction::Replace(new)
                if st.active_for(device) && crate::callers::may_rewrite(caller) =>
            {
                stats::add(Stat::Rewritten, 1);
                log::debug!("hipMemAdvise {advice} on {ptr:p} replaced by {new}");
                // SAFETY: the caller's arguments with another advice.
                real_call(|| unsafe { f(ptr, count, new, device) })
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
    // SAFETY: no arguments.
    let forward = || real_call(|| unsafe { f() });
    // The real hsa_init runs first: on a panic of ours afterwards, its result
    // is the answer (intercept does not call it again).
    intercept(&forward, |st| {
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
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(pool, size, flags, ptr) });
    intercept(&forward, |st| {
        // The runtime's own allocations (and HIP's, already handled at the HIP
        // level) pass untouched.
        if !st.tracking || ptr.is_null() || size == 0 || crate::callers::is_runtime(caller) {
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
        let r = padded_alloc(
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
    guarded(
        || {
            stats::add(Stat::Intercepted, 1);
            // The runtime frees what hipFree already took off the books.
            if state().tracking && !ptr.is_null() && !crate::callers::is_runtime(caller) {
                if let Some(r) = books() {
                    r.remove(ptr as u64);
                }
            }
            // SAFETY: the caller's pointer.
            unsafe { f(ptr) }
        },
        // SAFETY: as above.
        || unsafe { f(ptr) },
    )
}

/// An application's own SVM attributes: a fine-grained (coherent) GLOBAL_FLAG
/// is set coarse-grained instead, as managed memory is (facts §3, §6). The
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
    // SAFETY: the caller's arguments.
    let forward = || real_call(|| unsafe { f(ptr, size, list, count) });
    intercept(&forward, |st| {
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
        let r = real_call(|| unsafe { f(ptr, size, copy.as_mut_ptr(), count) });
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
};

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
        use std::cell::Cell;
        let forwarded = Cell::new(0);
        let forward = || {
            forwarded.set(forwarded.get() + 1);
            real_call(|| 7i32)
        };
        let r = intercept(&forward, |_| {
            let r = real_call(|| 5i32);
            if r == 5 {
                panic!("a bug of ours after the allocation");
            }
            r
        });
        assert_eq!((r, forwarded.get()), (5, 0));
        let r = intercept(&forward, |_| -> i32 { panic!("a bug of ours before it") });
        assert_eq!((r, forwarded.get()), (7, 1));
    }

    /// A child forked while a registry lock is held (by a thread that does
    /// not exist in the child) must not wait for it: e.g. its exit handlers
    /// print ROCM_FIX_STATS, which counts live allocations.
    #[test]
    fn a_forked_child_never_waits_for_a_registry_lock() {
        install_fork_guard();
        let held = REGISTRY.hold_all_locks();
        // SAFETY: the child only reads atomics and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let n = books().map_or(0, |r| r.len());
            // SAFETY: leaving the child at once.
            unsafe { libc::_exit(n as i32 + 7) };
        }
        drop(held);
        let mut status = 0;
        let mut waited = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
            if waited > 500 {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung on a registry lock");
            }
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
        assert!(books().is_some(), "the parent keeps its books");
    }
}
