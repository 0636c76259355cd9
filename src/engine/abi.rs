//! The contract between the std-free front (`librocm_fix.so`, src/preload)
//! and the engine (`librocm_fix_engine.so`, this crate) that the front opens
//! with dlopen on the first HIP/HSA call. Both crates compile this one file,
//! so it uses `core` only.
//!
//! Why two objects: the dynamic linker loads the front into every process
//! (LD_PRELOAD, /etc/ld.so.preload); a std cdylib costs ~63k instructions at
//! start-up (callgrind, Debian 12, glibc 2.36), the front ~10k. Processes that never touch HIP
//! never load the engine.

use core::ffi::{c_char, c_int, c_void};

/// Bumped whenever a field below changes; the front refuses another version.
pub const ABI_VERSION: u32 = 7;

/// File name of the engine, looked up next to the front.
pub const ENGINE_FILE: &[u8] = b"librocm_fix_engine.so\0";

/// The real functions rocm-fix forwards to, by index into [`REAL`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealFn {
    HipMalloc = 0,
    HipFree,
    HipHostMalloc,
    HipHostAlloc,
    HipHostFree,
    HipFreeHost,
    HipMallocManaged,
    HipExtMallocWithFlags,
    HipMemAdvise,
    HipGetProcAddress,
    HipGetDevice,
    HipRuntimeGetVersion,
    HipPeekAtLastError,
    HipGetLastError,
    HsaInit,
    HsaPoolAllocate,
    HsaPoolFree,
    HsaRegisterSystemEventHandler,
    HsaPoolGetInfo,
    HsaIterateAgents,
    HsaAgentGetInfo,
    HsaAgentIteratePools,
    HsaSvmAttributesSet,
    HsaSystemGetInfo,
    HsaVmemAddressReserve,
    HsaVmemAddressFree,
    HsaVmemHandleCreate,
    HsaVmemMap,
    HsaVmemUnmap,
    HsaVmemSetAccess,
    HipMallocPitch,
    HipMalloc3D,
    HipMemAllocPitch,
    HipMallocAsync,
    HipMallocFromPoolAsync,
    HipFreeAsync,
}

/// Which runtime library defines a real function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Hip,
    Hsa,
}

/// (name, version node, library) of every [`RealFn`], in its order. The
/// version nodes are those of ROCR-Runtime src/hsacore.so.def (rocm-6.2.4) and
/// clr hipamd/src/hip_hcc.map.in (rocm-6.2.2).
pub const REAL: [(&[u8], &[u8], Lib); 36] = [
    (b"hipMalloc\0", b"hip_4.2\0", Lib::Hip),
    (b"hipFree\0", b"hip_4.2\0", Lib::Hip),
    (b"hipHostMalloc\0", b"hip_4.2\0", Lib::Hip),
    (b"hipHostAlloc\0", b"hip_4.2\0", Lib::Hip),
    (b"hipHostFree\0", b"hip_4.2\0", Lib::Hip),
    (b"hipFreeHost\0", b"hip_4.2\0", Lib::Hip),
    (b"hipMallocManaged\0", b"hip_4.2\0", Lib::Hip),
    (b"hipExtMallocWithFlags\0", b"hip_4.2\0", Lib::Hip),
    (b"hipMemAdvise\0", b"hip_4.2\0", Lib::Hip),
    (b"hipGetProcAddress\0", b"hip_6.1\0", Lib::Hip),
    (b"hipGetDevice\0", b"hip_4.2\0", Lib::Hip),
    (b"hipRuntimeGetVersion\0", b"hip_4.2\0", Lib::Hip),
    (b"hipPeekAtLastError\0", b"hip_4.2\0", Lib::Hip),
    (b"hipGetLastError\0", b"hip_4.2\0", Lib::Hip),
    (b"hsa_init\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_memory_pool_allocate\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_memory_pool_free\0", b"ROCR_1\0", Lib::Hsa),
    (
        b"hsa_amd_register_system_event_handler\0",
        b"ROCR_1\0",
        Lib::Hsa,
    ),
    (b"hsa_amd_memory_pool_get_info\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_iterate_agents\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_agent_get_info\0", b"ROCR_1\0", Lib::Hsa),
    (
        b"hsa_amd_agent_iterate_memory_pools\0",
        b"ROCR_1\0",
        Lib::Hsa,
    ),
    (b"hsa_amd_svm_attributes_set\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_system_get_info\0", b"ROCR_1\0", Lib::Hsa),
    // The virtual memory API (ROCm 6.0+): the engine maps its sink with it.
    (b"hsa_amd_vmem_address_reserve\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_vmem_address_free\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_vmem_handle_create\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_vmem_map\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_vmem_unmap\0", b"ROCR_1\0", Lib::Hsa),
    (b"hsa_amd_vmem_set_access\0", b"ROCR_1\0", Lib::Hsa),
    (b"hipMallocPitch\0", b"hip_4.2\0", Lib::Hip),
    (b"hipMalloc3D\0", b"hip_4.2\0", Lib::Hip),
    (b"hipMemAllocPitch\0", b"hip_4.2\0", Lib::Hip),
    (b"hipMallocAsync\0", b"hip_5.1\0", Lib::Hip),
    (b"hipMallocFromPoolAsync\0", b"hip_5.1\0", Lib::Hip),
    (b"hipFreeAsync\0", b"hip_5.1\0", Lib::Hip),
];

/// Sonames tried, already loaded only (RTLD_NOLOAD), when RTLD_NEXT cannot
/// see a runtime that was opened with dlopen(RTLD_LOCAL) (checked on Debian 12, glibc 2.36).
pub const HIP_SONAMES: [&[u8]; 4] = [
    b"libamdhip64.so.6\0",
    b"libamdhip64.so.7\0",
    b"libamdhip64.so.5\0",
    b"libamdhip64.so\0",
];
pub const HSA_SONAMES: [&[u8]; 1] = [b"libhsa-runtime64.so.1\0"];

/// What the front lends the engine.
#[repr(C)]
pub struct FrontServices {
    pub abi_version: u32,
    /// The real function `id` (a [`RealFn`]), or 0 when it cannot be found.
    pub resolve: unsafe extern "C" fn(id: u32) -> usize,
    /// The front's own table of plain forwarders: the engine hands it back
    /// when it decides, at start, that it has nothing to do in this process
    /// (no active GPU, not observing), so that passthrough costs a few
    /// instructions per call instead of a trip through the engine.
    pub passthrough: *const EngineHooks,
    /// Tells the front where the HIP runtime's code is (`[lo, hi)`) and the
    /// real HSA allocate and free: calls the runtime makes itself, for every
    /// hipMalloc, then go straight on from the front (the engine would only
    /// pass them on after finding out who called).
    pub set_runtime:
        unsafe extern "C" fn(lo: usize, hi: usize, pool_allocate: usize, pool_free: usize),
}

// SAFETY: the services table is immutable and 'static.
unsafe impl Sync for FrontServices {}

pub type HipAlloc = unsafe extern "C" fn(*mut *mut c_void, usize) -> c_int;
pub type HipAllocFlags = unsafe extern "C" fn(*mut *mut c_void, usize, u32) -> c_int;
pub type HipFreeFn = unsafe extern "C" fn(*mut c_void) -> c_int;
pub type HipMemAdviseFn = unsafe extern "C" fn(*const c_void, usize, c_int, c_int) -> c_int;
/// The front's hooks for calls whose caller matters pass its return address last.
pub type HipAllocFlagsHook = unsafe extern "C" fn(*mut *mut c_void, usize, u32, usize) -> c_int;
pub type HipMemAdviseHook =
    unsafe extern "C" fn(*const c_void, usize, c_int, c_int, usize) -> c_int;
pub type HipGetProcAddressFn =
    unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> c_int;
pub type HipGetDeviceFn = unsafe extern "C" fn(*mut c_int) -> c_int;
pub type HipRuntimeGetVersionFn = unsafe extern "C" fn(*mut c_int) -> c_int;
pub type HipLastErrorFn = unsafe extern "C" fn() -> c_int;
pub type HsaRegisterFn = unsafe extern "C" fn(HsaEventCallback, *mut c_void) -> u32;
pub type HsaEventCallback = unsafe extern "C" fn(*const c_void, *mut c_void) -> u32;
pub type HsaPoolGetInfoFn = unsafe extern "C" fn(u64, u32, *mut c_void) -> u32;
pub type HsaAgentGetInfoFn = unsafe extern "C" fn(u64, u32, *mut c_void) -> u32;
pub type HsaIterateAgentsFn =
    unsafe extern "C" fn(unsafe extern "C" fn(u64, *mut c_void) -> u32, *mut c_void) -> u32;
pub type HsaIteratePoolsFn =
    unsafe extern "C" fn(u64, unsafe extern "C" fn(u64, *mut c_void) -> u32, *mut c_void) -> u32;
pub type HsaInitFn = unsafe extern "C" fn() -> u32;
pub type HsaPoolAllocateFn = unsafe extern "C" fn(u64, usize, u32, *mut *mut c_void) -> u32;
/// The front's hook passes the caller's return address as a fifth argument.
pub type HsaPoolAllocateHook =
    unsafe extern "C" fn(u64, usize, u32, *mut *mut c_void, usize) -> u32;
pub type HsaPoolFreeFn = unsafe extern "C" fn(*mut c_void) -> u32;
/// The front's free hook also passes the caller's return address.
pub type HsaPoolFreeHook = unsafe extern "C" fn(*mut c_void, usize) -> u32;
/// hsa_amd_svm_attributes_set(ptr, size, list of {attribute, value}, count).
pub type HsaSvmSetFn = unsafe extern "C" fn(*mut c_void, usize, *mut [u64; 2], usize) -> u32;
pub type HsaSvmSetHook =
    unsafe extern "C" fn(*mut c_void, usize, *mut [u64; 2], usize, usize) -> u32;
pub type StatsFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;
/// hipMallocPitch(ptr, pitch, width, height).
pub type HipMallocPitchFn =
    unsafe extern "C" fn(*mut *mut c_void, *mut usize, usize, usize) -> c_int;
/// hipPitchedPtr and hipExtent (hip_runtime_api.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HipPitchedPtr {
    pub ptr: *mut c_void,
    pub pitch: usize,
    pub xsize: usize,
    pub ysize: usize,
}
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HipExtent {
    pub width: usize,
    pub height: usize,
    pub depth: usize,
}
pub type HipMalloc3DFn = unsafe extern "C" fn(*mut HipPitchedPtr, HipExtent) -> c_int;
/// hipMemAllocPitch(ptr, pitch, width, height, element size).
pub type HipMemAllocPitchFn =
    unsafe extern "C" fn(*mut *mut c_void, *mut usize, usize, usize, u32) -> c_int;
/// hipMallocAsync(ptr, size, stream).
pub type HipMallocAsyncFn = unsafe extern "C" fn(*mut *mut c_void, usize, *mut c_void) -> c_int;
/// hipMallocFromPoolAsync(ptr, size, pool, stream).
pub type HipMallocFromPoolFn =
    unsafe extern "C" fn(*mut *mut c_void, usize, *mut c_void, *mut c_void) -> c_int;
/// hipFreeAsync(ptr, stream).
pub type HipFreeAsyncFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
pub type HsaSystemGetInfoFn = unsafe extern "C" fn(u32, *mut c_void) -> u32;
/// hsa_amd_vmem_address_reserve(va, size, address hint, flags).
pub type HsaVmemReserveFn = unsafe extern "C" fn(*mut *mut c_void, usize, u64, u64) -> u32;
pub type HsaVmemFreeFn = unsafe extern "C" fn(*mut c_void, usize) -> u32;
/// hsa_amd_vmem_handle_create(pool, size, type, flags, handle).
pub type HsaVmemCreateFn = unsafe extern "C" fn(u64, usize, u32, u64, *mut u64) -> u32;
/// hsa_amd_vmem_map(va, size, offset, handle, flags).
pub type HsaVmemMapFn = unsafe extern "C" fn(*mut c_void, usize, usize, u64, u64) -> u32;
pub type HsaVmemUnmapFn = unsafe extern "C" fn(*mut c_void, usize) -> u32;
/// hsa_amd_memory_access_desc_t: {permissions (u32), agent}.
#[repr(C)]
pub struct HsaAccessDesc {
    pub permissions: u32,
    pub agent: u64,
}
/// hsa_amd_vmem_set_access(va, size, descriptors, count).
pub type HsaVmemSetAccessFn =
    unsafe extern "C" fn(*mut c_void, usize, *const HsaAccessDesc, usize) -> u32;

/// The engine's implementation of every hook.
#[repr(C)]
pub struct EngineHooks {
    pub abi_version: u32,
    pub hip_malloc: HipAlloc,
    pub hip_free: HipFreeFn,
    pub hip_host_malloc: HipAllocFlagsHook,
    pub hip_host_alloc: HipAllocFlagsHook,
    pub hip_host_free: HipFreeFn,
    pub hip_free_host: HipFreeFn,
    pub hip_malloc_managed: HipAllocFlagsHook,
    pub hip_ext_malloc_with_flags: HipAllocFlagsHook,
    pub hip_mem_advise: HipMemAdviseHook,
    pub hsa_init: HsaInitFn,
    pub hsa_pool_allocate: HsaPoolAllocateHook,
    pub hsa_pool_free: HsaPoolFreeHook,
    pub hsa_svm_attributes_set: HsaSvmSetHook,
    pub get_stats: StatsFn,
    pub hip_malloc_pitch: HipMallocPitchFn,
    pub hip_malloc_3d: HipMalloc3DFn,
    pub hip_mem_alloc_pitch: HipMemAllocPitchFn,
    pub hip_malloc_async: HipMallocAsyncFn,
    pub hip_malloc_from_pool_async: HipMallocFromPoolFn,
    pub hip_free_async: HipFreeAsyncFn,
}

/// The engine's one export: called once by the front.
pub const ENGINE_ENTRY: &[u8] = b"rocm_fix_engine_init\0";
pub type EngineInit = unsafe extern "C" fn(*const FrontServices) -> *const EngineHooks;

/// The C API's statistics (include/rocm_fix.h), in this order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub intercepted: u64,
    pub rewritten: u64,
    pub padded: u64,
    pub padded_bytes: u64,
    pub retried: u64,
    pub faults: u64,
    /// NUL-terminated version string.
    pub version: [u8; 16],
    /// Allocations the registry tracks right now.
    pub live_allocations: u64,
}
