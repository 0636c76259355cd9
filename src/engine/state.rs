//! The engine's process-wide state: what was decided once on the first
//! hooked call ([`State`]), the registry of live allocations, the real
//! functions the front resolved, and the statistics snapshot.
//!
//! The hooks, the pool walker and the fault handler all read it; it calls
//! none of them (so no module of the engine depends on another in a circle).

use crate::abi::*;
use crate::registry::Registry;
use crate::stats::{self, Stat};
use rocm_fix_shared::config::{self, Config, Mode};
use rocm_fix_shared::process;
use rocm_fix_shared::topology::{self, Family};
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
    /// coherent memory for more flags; clr hipamd/src/hip_memory.cpp, rocm-6.2.2).
    pub host_coherent: bool,
    /// The runtime's HSA_FORCE_FINE_GRAIN_PCIE=1 (the fine VRAM pool is visible).
    pub fine_pool_visible: bool,
    /// KFD node of each HIP device ordinal.
    pub device_nodes: Vec<u32>,
    /// What VRAM objects are aligned to (policy::vram_granule).
    pub granule: u64,
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
            .map(|&(_, f)| config::active(cfg.mode, f))
            .collect();
        let any_active = active.iter().any(|&a| a);
        let tracking = any_active || cfg.mode == Mode::Observe;
        let gpus_nodes = gpus.iter().map(|g| g.node).collect();
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
            device_nodes: gpus_nodes,
            granule: crate::policy::vram_granule(
                std::env::var("HSA_DISABLE_FRAGMENT_ALLOCATOR")
                    .ok()
                    .as_deref(),
                std::env::var("HSA_MAX_VA_ALIGN").ok().as_deref(),
            ),
        }
    }

    /// KFD node of HIP device `device`.
    pub fn device_node(&self, device: i32) -> Option<u32> {
        usize::try_from(device)
            .ok()
            .and_then(|d| self.device_nodes.get(d))
            .copied()
    }

    /// Whether rewrites apply to the GPU at KFD `node`.
    pub fn node_active(&self, node: u32) -> bool {
        self.gpus
            .iter()
            .find(|g| g.node == node)
            .is_some_and(|g| config::active(self.cfg.mode, topology::family(g.gfx_target_version)))
    }

    pub(crate) fn active_for(&self, device: i32) -> bool {
        usize::try_from(device)
            .ok()
            .and_then(|d| self.active.get(d))
            .copied()
            .unwrap_or(self.any_active)
    }
}

pub(crate) static SERVICES: AtomicPtr<FrontServices> = AtomicPtr::new(std::ptr::null_mut());
pub(crate) static STATE: OnceLock<State> = OnceLock::new();
pub(crate) static REGISTRY: Registry = Registry::new();
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
    // (Not hipMalloc: the front decides the API-table route when one of the
    // table's functions is first looked up, which must happen in a HIP hook.)
    let anchor = match REAL.get(id as usize).map(|r| r.2) {
        Some(Lib::Hip) => RealFn::HipGetDevice,
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

/// The real function `$id` as a function pointer of type `$t`, or None.
macro_rules! real_fn {
    ($id:expr, $t:ty) => {
        match $crate::state::real($id) {
            0 => None,
            // SAFETY: the front resolved the real function of this signature.
            f => Some(unsafe { std::mem::transmute::<usize, $t>(f) }),
        }
    };
}
pub(crate) use real_fn;

pub fn state() -> &'static State {
    STATE.get_or_init(|| {
        let secure = process::secure_execution();
        // /etc/rocm-fix.conf, the user's file (not when secure), the
        // environment. Values that are not UTF-8 reach the parser, which
        // warns about them.
        let env_os = |k: &str| std::env::var_os(k);
        let (cfg, warnings) = config::load(secure, &env_os);
        for w in &warnings {
            eprintln!("{w}");
        }
        let env = |k: &str| std::env::var(k).ok();
        crate::logging::init(cfg.log_filter.as_deref());
        let root = process::topology_root(secure);
        let gpus = topology::read_topology(std::path::Path::new(&root));
        let visible = process::visible_devices(&env, secure);
        let devices = process::hip_devices(&gpus, visible.as_deref());
        let mut st = State::new(cfg, secure, gpus, devices);
        if let Some(v) = visible.as_deref() {
            st.device_nodes = v
                .iter()
                .filter_map(|&i| st.gpus.get(i).map(|g| g.node))
                .collect();
        }
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
        "rocm-fix: intercepted {} rewritten {} protected {} (VRAM added: {} bytes) retried {} faults {} live {}",
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

#[cfg(test)]
mod tests {
    use super::*;

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
