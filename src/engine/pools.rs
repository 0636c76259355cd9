//! The HSA memory pools of this process, for an application's own
//! `hsa_amd_memory_pool_allocate` calls: which agent a pool belongs to, and
//! that agent's coarse-grained pool (hsa_ext_amd.h; ROCR-Runtime amd_gpu_agent.cpp,
//! rocm-6.2.4). Learnt once, from
//! the runtime, the first time an application allocates through HSA.

use crate::abi::*;
use crate::policy;
use crate::state::{real, State};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug)]
struct PoolInfo {
    pool: u64,
    flags: u32,
    /// KFD node of the GPU agent; None for the CPU agent.
    node: Option<u32>,
    /// The coarse-grained pool of the same agent.
    coarse: Option<u64>,
    /// The agent the pool belongs to.
    agent: u64,
}

/// What to do with one application allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Padding (and the rewrite, if any) applies.
    pub active: bool,
    /// The coarse pool to use instead, when the asked pool is fine-grained.
    pub coarse: Option<u64>,
    /// Index of the GPU in the topology, -1 for host memory.
    pub device: i32,
}

/// The agent and coarse-grained VRAM pool of the GPU at KFD `node`.
pub fn gpu_vram(node: u32) -> Option<(u64, u64)> {
    pools()
        .iter()
        .find(|p| p.node == Some(node) && p.flags & policy::HSA_POOL_FLAG_COARSE_GRAINED != 0)
        .map(|p| (p.agent, p.pool))
}

/// The size of `pool` in bytes (the VRAM of a GPU's pool), or 0.
pub fn pool_size(pool: u64) -> u64 {
    let Some(get) = crate::state::real_fn!(RealFn::HsaPoolGetInfo, HsaPoolGetInfoFn) else {
        return 0;
    };
    let mut size: usize = 0;
    // SAFETY: SIZE is a size_t attribute.
    let r = unsafe {
        get(
            pool,
            policy::HSA_POOL_INFO_SIZE,
            (&mut size as *mut usize).cast(),
        )
    };
    if r == policy::HSA_STATUS_SUCCESS {
        size as u64
    } else {
        0
    }
}

/// The KFD node of the GPU whose VRAM `pool` is; None for host pools.
pub fn vram_node(pool: u64) -> Option<u32> {
    pools().iter().find(|p| p.pool == pool).and_then(|p| p.node)
}

pub fn plan(pool: u64, st: &State) -> Plan {
    let Some(info) = pools().iter().find(|p| p.pool == pool) else {
        return Plan {
            active: false,
            coarse: None,
            device: -1,
        };
    };
    let (active, device) = match info.node {
        Some(node) => (
            st.node_active(node),
            st.gpus
                .iter()
                .position(|g| g.node == node)
                .map_or(-1, |i| i as i32),
        ),
        None => (st.any_active, -1),
    };
    let coarse = (active && policy::hsa_pool_rewrite(info.flags))
        .then_some(info.coarse)
        .flatten();
    Plan {
        active,
        coarse,
        device,
    }
}

/// Learnt once the runtime has any: an empty answer (HSA not initialised
/// yet) is not kept, so a later call asks again.
fn pools() -> &'static [PoolInfo] {
    static POOLS: OnceLock<Vec<PoolInfo>> = OnceLock::new();
    if let Some(p) = POOLS.get() {
        return p;
    }
    // HIP is loaded and HSA's agent walk cannot be found: HSA is not in
    // reach of the front (libamdhip64 needs libhsa-runtime64, so it would be
    // loaded by now). Asking again would go through dlsym on every padded
    // allocation, under the loader's lock.
    static NO_HSA: AtomicBool = AtomicBool::new(false);
    if NO_HSA.load(Ordering::Relaxed) {
        return &[];
    }
    let learnt = learn();
    if learnt.is_empty() {
        if real(RealFn::HsaIterateAgents) == 0 && real(RealFn::HipGetDevice) != 0 {
            NO_HSA.store(true, Ordering::Relaxed);
        }
        return &[];
    }
    POOLS.get_or_init(|| learnt)
}

struct Walk {
    get_pool: HsaPoolGetInfoFn,
    get_agent: HsaAgentGetInfoFn,
    iter_pools: HsaIteratePoolsFn,
    out: Vec<PoolInfo>,
    node: Option<u32>,
    agent: u64,
}

unsafe extern "C" fn on_pool(pool: u64, data: *mut c_void) -> u32 {
    // SAFETY: data is the &mut Walk passed by learn().
    let w = unsafe { &mut *(data as *mut Walk) };
    let mut flags: u32 = 0;
    // SAFETY: GLOBAL_FLAGS is a u32.
    unsafe {
        (w.get_pool)(
            pool,
            policy::HSA_POOL_INFO_GLOBAL_FLAGS,
            (&mut flags as *mut u32).cast(),
        )
    };
    w.out.push(PoolInfo {
        pool,
        flags,
        node: w.node,
        coarse: None,
        agent: w.agent,
    });
    policy::HSA_STATUS_SUCCESS
}

unsafe extern "C" fn on_agent(agent: u64, data: *mut c_void) -> u32 {
    // SAFETY: data is the &mut Walk passed by learn().
    let w = unsafe { &mut *(data as *mut Walk) };
    let mut kind: u32 = 0;
    let mut node: u32 = 0;
    // SAFETY: DEVICE and DRIVER_NODE_ID are u32 attributes.
    unsafe {
        (w.get_agent)(
            agent,
            policy::HSA_AGENT_INFO_DEVICE,
            (&mut kind as *mut u32).cast(),
        );
        (w.get_agent)(
            agent,
            policy::HSA_AMD_AGENT_INFO_DRIVER_NODE_ID,
            (&mut node as *mut u32).cast(),
        );
    }
    w.node = (kind == policy::HSA_DEVICE_TYPE_GPU).then_some(node);
    w.agent = agent;
    let first = w.out.len();
    // SAFETY: on_pool matches the callback type; data stays valid during the call.
    unsafe { (w.iter_pools)(agent, on_pool, data) };
    let coarse = w.out[first..]
        .iter()
        .find(|p| p.flags & policy::HSA_POOL_FLAG_COARSE_GRAINED != 0)
        .map(|p| p.pool);
    for p in &mut w.out[first..] {
        p.coarse = coarse;
    }
    policy::HSA_STATUS_SUCCESS
}

fn learn() -> Vec<PoolInfo> {
    macro_rules! get {
        ($id:expr, $t:ty) => {
            match real($id) {
                0 => return Vec::new(),
                // SAFETY: the front resolved the real function of this signature.
                f => unsafe { std::mem::transmute::<usize, $t>(f) },
            }
        };
    }
    let iter_agents = get!(RealFn::HsaIterateAgents, HsaIterateAgentsFn);
    let mut w = Walk {
        get_pool: get!(RealFn::HsaPoolGetInfo, HsaPoolGetInfoFn),
        get_agent: get!(RealFn::HsaAgentGetInfo, HsaAgentGetInfoFn),
        iter_pools: get!(RealFn::HsaAgentIteratePools, HsaIteratePoolsFn),
        out: Vec::new(),
        node: None,
        agent: 0,
    };
    // SAFETY: on_agent matches the callback type; w outlives the call.
    unsafe { iter_agents(on_agent, (&mut w as *mut Walk).cast()) };
    w.out
}
