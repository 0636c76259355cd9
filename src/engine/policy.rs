//! Pure decisions: which allocations rocm-fix rewrites and how. No I/O.
//!
//! The values are declared here from the ROCm headers (hsa.h, hsa_ext_amd.h of
//! ROCR-Runtime rocm-6.2.4; hip_runtime_api.h of HIP rocm-6.2.2), not copied.
//! The rewrites move allocations that land in fine-grained (coherent) memory,
//! which GFX10/10.3 maps MTYPE_UC (the amdgpu driver's gmc_v10_0.c), to the
//! coarse-grained equivalent.

// ---- hipHostMalloc flags (hip_runtime_api.h) ----

/// `hipHostMallocDefault`.
pub const HIP_HOST_MALLOC_DEFAULT: u32 = 0;
/// `hipHostMallocPortable` (= `hipHostAllocPortable`).
pub const HIP_HOST_MALLOC_PORTABLE: u32 = 0x1;
/// `hipHostMallocMapped` (= `hipHostAllocMapped`).
pub const HIP_HOST_MALLOC_MAPPED: u32 = 0x2;
/// `hipHostMallocWriteCombined` (= `hipHostAllocWriteCombined`).
pub const HIP_HOST_MALLOC_WRITE_COMBINED: u32 = 0x4;
/// `hipHostMallocUncached` (= `hipHostAllocUncached`, 7.x).
pub const HIP_HOST_MALLOC_UNCACHED: u32 = 0x1000_0000;
/// `hipHostMallocNumaUser`.
pub const HIP_HOST_MALLOC_NUMA_USER: u32 = 0x2000_0000;
/// `hipHostMallocCoherent`.
pub const HIP_HOST_MALLOC_COHERENT: u32 = 0x4000_0000;
/// `hipHostMallocNonCoherent`.
pub const HIP_HOST_MALLOC_NON_COHERENT: u32 = 0x8000_0000;

/// The flags `hipHostAlloc` accepts from 6.3 (clr hip_memory.cpp); 7.x also Uncached.
pub const HIP_HOST_ALLOC_VALID: u32 =
    HIP_HOST_MALLOC_PORTABLE | HIP_HOST_MALLOC_MAPPED | HIP_HOST_MALLOC_WRITE_COMBINED;

/// Every hipHostMalloc flag rocm-fix knows; anything else is left to the runtime.
const HIP_HOST_MALLOC_KNOWN: u32 = HIP_HOST_MALLOC_PORTABLE
    | HIP_HOST_MALLOC_MAPPED
    | HIP_HOST_MALLOC_WRITE_COMBINED
    | HIP_HOST_MALLOC_UNCACHED
    | HIP_HOST_MALLOC_NUMA_USER
    | HIP_HOST_MALLOC_COHERENT
    | HIP_HOST_MALLOC_NON_COHERENT;

// ---- hipExtMallocWithFlags values (hip_runtime_api.h; compared with ==, clr hip_memory.cpp) ----

/// `hipDeviceMallocDefault`: coarse VRAM.
pub const HIP_DEVICE_MALLOC_DEFAULT: u32 = 0;
/// `hipDeviceMallocFinegrained`: fine-grained VRAM.
pub const HIP_DEVICE_MALLOC_FINEGRAINED: u32 = 1;
/// `hipMallocSignalMemory`: a signal (size must be 8).
pub const HIP_MALLOC_SIGNAL_MEMORY: u32 = 2;
/// `hipDeviceMallocUncached` (5.5+ header): extended-scope fine-grained VRAM.
pub const HIP_DEVICE_MALLOC_UNCACHED: u32 = 3;
/// `hipDeviceMallocContiguous` (6.2+).
pub const HIP_DEVICE_MALLOC_CONTIGUOUS: u32 = 4;

// ---- hipMallocManaged attach flags (hip_runtime_api.h) ----

/// `hipMemAttachGlobal`.
pub const HIP_MEM_ATTACH_GLOBAL: u32 = 1;
/// `hipMemAttachHost`.
pub const HIP_MEM_ATTACH_HOST: u32 = 2;
/// `hipMemAttachSingle`.
pub const HIP_MEM_ATTACH_SINGLE: u32 = 4;

// ---- hipMemoryAdvise (hip_runtime_api.h) ----

/// `hipMemAdviseSetReadMostly`.
pub const HIP_MEM_ADVISE_SET_READ_MOSTLY: i32 = 1;
/// `hipMemAdviseUnsetReadMostly`.
pub const HIP_MEM_ADVISE_UNSET_READ_MOSTLY: i32 = 2;
/// `hipMemAdviseSetPreferredLocation`.
pub const HIP_MEM_ADVISE_SET_PREFERRED_LOCATION: i32 = 3;
/// `hipMemAdviseUnsetPreferredLocation`.
pub const HIP_MEM_ADVISE_UNSET_PREFERRED_LOCATION: i32 = 4;
/// `hipMemAdviseSetAccessedBy`.
pub const HIP_MEM_ADVISE_SET_ACCESSED_BY: i32 = 5;
/// `hipMemAdviseUnsetAccessedBy`.
pub const HIP_MEM_ADVISE_UNSET_ACCESSED_BY: i32 = 6;
/// `hipMemAdviseSetCoarseGrain`.
pub const HIP_MEM_ADVISE_SET_COARSE_GRAIN: i32 = 100;
/// `hipMemAdviseUnsetCoarseGrain`: makes an SVM range fine-grained (coherent).
pub const HIP_MEM_ADVISE_UNSET_COARSE_GRAIN: i32 = 101;

// ---- hipError_t (hip_runtime_api.h) ----

/// `hipSuccess`.
pub const HIP_SUCCESS: i32 = 0;
/// `hipErrorInvalidValue`.
pub const HIP_ERROR_INVALID_VALUE: i32 = 1;
/// `hipErrorOutOfMemory` (= `hipErrorMemoryAllocation`).
pub const HIP_ERROR_OUT_OF_MEMORY: i32 = 2;
/// `hipErrorNotInitialized`.
pub const HIP_ERROR_NOT_INITIALIZED: i32 = 3;
/// `hipErrorNoDevice`.
pub const HIP_ERROR_NO_DEVICE: i32 = 100;
/// `hipErrorInvalidDevice`.
pub const HIP_ERROR_INVALID_DEVICE: i32 = 101;
/// `hipErrorSharedObjectInitFailed`.
pub const HIP_ERROR_SHARED_OBJECT_INIT_FAILED: i32 = 303;
/// `hipErrorIllegalAddress`.
pub const HIP_ERROR_ILLEGAL_ADDRESS: i32 = 700;
/// `hipErrorLaunchFailure`.
pub const HIP_ERROR_LAUNCH_FAILURE: i32 = 719;
/// `hipErrorNotSupported`.
pub const HIP_ERROR_NOT_SUPPORTED: i32 = 801;
/// `hipErrorUnknown`.
pub const HIP_ERROR_UNKNOWN: i32 = 999;

// ---- hsa_status_t (hsa.h) ----

/// `HSA_STATUS_SUCCESS`.
pub const HSA_STATUS_SUCCESS: u32 = 0;
/// `HSA_STATUS_INFO_BREAK`: stops an iteration early.
pub const HSA_STATUS_INFO_BREAK: u32 = 0x1;
/// `HSA_STATUS_ERROR`.
pub const HSA_STATUS_ERROR: u32 = 0x1000;
/// `HSA_STATUS_ERROR_INVALID_ARGUMENT`.
pub const HSA_STATUS_ERROR_INVALID_ARGUMENT: u32 = 0x1001;
/// `HSA_STATUS_ERROR_INVALID_ALLOCATION`.
pub const HSA_STATUS_ERROR_INVALID_ALLOCATION: u32 = 0x1003;
/// `HSA_STATUS_ERROR_INVALID_AGENT`.
pub const HSA_STATUS_ERROR_INVALID_AGENT: u32 = 0x1004;
/// `HSA_STATUS_ERROR_OUT_OF_RESOURCES`.
pub const HSA_STATUS_ERROR_OUT_OF_RESOURCES: u32 = 0x1008;
/// `HSA_STATUS_ERROR_NOT_INITIALIZED`.
pub const HSA_STATUS_ERROR_NOT_INITIALIZED: u32 = 0x100B;

// ---- HSA memory pools (hsa_ext_amd.h) ----

/// `HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT`.
pub const HSA_POOL_FLAG_KERNARG_INIT: u32 = 1;
/// `HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED`.
pub const HSA_POOL_FLAG_FINE_GRAINED: u32 = 2;
/// `HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED`.
pub const HSA_POOL_FLAG_COARSE_GRAINED: u32 = 4;
/// `HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED` (5.7+).
pub const HSA_POOL_FLAG_EXTENDED_SCOPE_FINE_GRAINED: u32 = 8;

/// `hsa_amd_memory_pool_allocate` flag `HSA_AMD_MEMORY_POOL_STANDARD_FLAG`.
pub const HSA_POOL_ALLOC_STANDARD: u32 = 0;
/// `HSA_AMD_MEMORY_POOL_PCIE_FLAG` (5.3+).
pub const HSA_POOL_ALLOC_PCIE: u32 = 1 << 0;
/// `HSA_AMD_MEMORY_POOL_CONTIGUOUS_FLAG` (6.2+).
pub const HSA_POOL_ALLOC_CONTIGUOUS: u32 = 1 << 1;
/// `HSA_AMD_MEMORY_POOL_EXECUTABLE_FLAG` (likely 6.4+).
pub const HSA_POOL_ALLOC_EXECUTABLE: u32 = 1 << 2;

/// `HSA_AMD_MEMORY_POOL_INFO_SEGMENT` (value: `hsa_amd_segment_t`).
pub const HSA_POOL_INFO_SEGMENT: u32 = 0;
/// `HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS` (value: u32).
pub const HSA_POOL_INFO_GLOBAL_FLAGS: u32 = 1;
/// `HSA_AMD_MEMORY_POOL_INFO_SIZE` (value: size_t).
pub const HSA_POOL_INFO_SIZE: u32 = 2;
/// `HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED` (value: bool).
pub const HSA_POOL_INFO_RUNTIME_ALLOC_ALLOWED: u32 = 5;
/// `HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE` (value: size_t).
pub const HSA_POOL_INFO_RUNTIME_ALLOC_GRANULE: u32 = 6;
/// `HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALIGNMENT` (value: size_t).
pub const HSA_POOL_INFO_RUNTIME_ALLOC_ALIGNMENT: u32 = 7;
/// `HSA_AMD_MEMORY_POOL_INFO_ACCESSIBLE_BY_ALL` (value: bool).
pub const HSA_POOL_INFO_ACCESSIBLE_BY_ALL: u32 = 15;
/// `HSA_AMD_MEMORY_POOL_INFO_ALLOC_MAX_SIZE` (value: size_t).
pub const HSA_POOL_INFO_ALLOC_MAX_SIZE: u32 = 16;
/// `HSA_AMD_MEMORY_POOL_INFO_LOCATION` (5.5+; value: CPU 0, GPU 1).
pub const HSA_POOL_INFO_LOCATION: u32 = 17;
/// `HSA_AMD_SEGMENT_GLOBAL`.
pub const HSA_SEGMENT_GLOBAL: u32 = 0;
/// `HSA_AMD_MEMORY_POOL_LOCATION_CPU`.
pub const HSA_POOL_LOCATION_CPU: u32 = 0;
/// `HSA_AMD_MEMORY_POOL_LOCATION_GPU`.
pub const HSA_POOL_LOCATION_GPU: u32 = 1;

/// `HSA_AGENT_INFO_NAME` (value: char[64]).
pub const HSA_AGENT_INFO_NAME: u32 = 0;
/// `HSA_AGENT_INFO_DEVICE` (value: `hsa_device_type_t`).
pub const HSA_AGENT_INFO_DEVICE: u32 = 17;
/// `HSA_AMD_AGENT_INFO_DRIVER_NODE_ID` (value: u32, the KFD topology node).
pub const HSA_AMD_AGENT_INFO_DRIVER_NODE_ID: u32 = 0xA004;
/// `HSA_DEVICE_TYPE_CPU`.
pub const HSA_DEVICE_TYPE_CPU: u32 = 0;
/// `HSA_DEVICE_TYPE_GPU`.
pub const HSA_DEVICE_TYPE_GPU: u32 = 1;

// The mode and where it applies are configuration that the command reports
// too (`rocm-fix doctor`), so they live in src/shared; the rule `active` is
// re-exported here with the rest of the policy.
pub use rocm_fix_shared::config::{active, Mode};

/// The flags to pass to `hipHostMalloc` instead of `flags`.
///
/// Default, Coherent, Mapped and NumaUser allocations (and any without
/// NonCoherent when `HIP_HOST_COHERENT=1`) come from the CPU fine-grained pool;
/// NonCoherent selects the coarse-grained pool (clr hip_memory.cpp). So Coherent is
/// dropped and NonCoherent added; Portable, Mapped, WriteCombined and NumaUser
/// are kept. Left unchanged, so the runtime behaves (and errs) as it would:
/// flags that already ask for NonCoherent (alone or with Coherent), Uncached
/// (rejected with NonCoherent, clr hip_memory.cpp 7.x), and any bit rocm-fix does not know.
pub fn host_malloc_flags(flags: u32) -> u32 {
    if flags & (HIP_HOST_MALLOC_NON_COHERENT | HIP_HOST_MALLOC_UNCACHED) != 0
        || flags & !HIP_HOST_MALLOC_KNOWN != 0
    {
        return flags;
    }
    (flags & !HIP_HOST_MALLOC_COHERENT) | HIP_HOST_MALLOC_NON_COHERENT
}

/// Whether `hipHostMalloc(flags)` allocates coherent (fine-grained) host
/// memory (clr hip_memory.cpp): default (0), Coherent, Mapped or NumaUser, or any flags
/// without NonCoherent when `HIP_HOST_COHERENT=1`. Portable or WriteCombined
/// alone already come from the coarse pool: nothing to rewrite.
pub fn host_malloc_is_coherent(flags: u32, host_coherent_env: bool) -> bool {
    flags & HIP_HOST_MALLOC_NON_COHERENT == 0
        && (flags == 0
            || flags
                & (HIP_HOST_MALLOC_COHERENT | HIP_HOST_MALLOC_MAPPED | HIP_HOST_MALLOC_NUMA_USER)
                != 0
            || host_coherent_env)
}

/// Whether `hipExtMallocWithFlags(flags)` would succeed natively where
/// rocm-fix rewrites it, so that a failure is never turned into a success
/// (clr hip_memory.cpp): Finegrained without a visible fine-grained VRAM pool fails up
/// to 6.2 (from 6.3 it silently gives coarse VRAM), and Uncached fails
/// before 5.7 (no extended-scope pool). `version` is HIP_VERSION
/// (major*10000000 + minor*100000 + patch); `fine_pool_visible` stands for
/// HSA_FORCE_FINE_GRAIN_PCIE=1 (no XGMI on consumer cards).
pub fn ext_malloc_rewrite_ok(flags: u32, version: Option<i32>, fine_pool_visible: bool) -> bool {
    match (flags, version) {
        (HIP_DEVICE_MALLOC_FINEGRAINED, Some(v)) => v >= 60_300_000 || fine_pool_visible,
        (HIP_DEVICE_MALLOC_UNCACHED, Some(v)) => v >= 50_700_000,
        (HIP_DEVICE_MALLOC_FINEGRAINED | HIP_DEVICE_MALLOC_UNCACHED, None) => false,
        _ => true,
    }
}

/// What to do with a `hipHostAlloc(ptr, size, flags)` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAlloc {
    /// Call `hipHostAlloc` with the caller's flags untouched.
    Forward,
    /// Call `hipHostMalloc(ptr, size, flags)` with these flags instead:
    /// `hipHostAlloc` itself cannot be asked for non-coherent memory.
    UseHostMalloc(u32),
}

/// How to keep a `hipHostAlloc` allocation out of the fine-grained pool.
///
/// From 6.3 `hipHostAlloc` allocates host memory like `hipHostMalloc` but
/// rejects any flag outside Portable|Mapped|WriteCombined (7.x: also
/// Uncached) with hipErrorInvalidValue (clr hip_memory.cpp), so NonCoherent cannot be
/// passed to it: valid flags are redirected to `hipHostMalloc` with
/// [`host_malloc_flags`]. Invalid flags, and Uncached, are forwarded so the
/// runtime reports its own result. Up to 6.2 `hipHostAlloc` returns coarse
/// VRAM (clr hip_memory.cpp, rocm-6.2.2): callers must only apply this on 6.3 and later.
pub fn host_alloc_flags(flags: u32) -> HostAlloc {
    if flags & !HIP_HOST_ALLOC_VALID != 0 {
        return HostAlloc::Forward;
    }
    HostAlloc::UseHostMalloc(host_malloc_flags(flags))
}

/// The flags to pass to `hipExtMallocWithFlags` instead of `flags`.
///
/// Finegrained (fine VRAM) and Uncached (extended-scope fine VRAM) become
/// Default (coarse VRAM); the call compares flags with ==, so every other
/// value — Contiguous, SignalMemory, unknown — is passed through (clr hip_memory.cpp).
pub fn ext_malloc_flags(flags: u32) -> u32 {
    match flags {
        HIP_DEVICE_MALLOC_FINEGRAINED | HIP_DEVICE_MALLOC_UNCACHED => HIP_DEVICE_MALLOC_DEFAULT,
        other => other,
    }
}

/// What to do with a `hipMemAdvise` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviseAction {
    /// Pass the call to HIP.
    Forward,
    /// Pass the call with this advice instead.
    Replace(i32),
}

/// Whether to apply a `hipMemAdvise` advice.
///
/// UnsetCoarseGrain makes an SVM range fine-grained (coherent) through
/// `hsa_amd_svm_attributes_set` (clr rocdevice.cpp), which GFX10 maps MTYPE_UC
/// (amdkfd kfd_svm.c): it is not applied. It is replaced by SetCoarseGrain rather
/// than skipped, so that HIP still validates the pointer and device and the
/// caller gets the runtime's own answer (an error for a bad range stays an
/// error); the range stays coarse-grained.
pub fn mem_advise(advice: i32) -> AdviseAction {
    if advice == HIP_MEM_ADVISE_UNSET_COARSE_GRAIN {
        AdviseAction::Replace(HIP_MEM_ADVISE_SET_COARSE_GRAIN)
    } else {
        AdviseAction::Forward
    }
}

/// Whether an application allocation from a pool with these global flags
/// should instead come from the coarse-grained pool of the same agent.
///
/// True for FINE_GRAINED and EXTENDED_SCOPE_FINE_GRAINED pools (hsa_ext_amd.h;
/// UC on GFX10, the amdgpu driver's gmc_v10_0.c), except the kernarg pool (KERNARG_INIT), which
/// kernel arguments need coherent. The runtime's own fine-grained buffers
/// (signals, hostcall) must stay where they are: callers apply this only to
/// allocations made on the application's behalf.
pub fn hsa_pool_rewrite(pool_flags: u32) -> bool {
    pool_flags & (HSA_POOL_FLAG_FINE_GRAINED | HSA_POOL_FLAG_EXTENDED_SCOPE_FINE_GRAINED) != 0
        && pool_flags & HSA_POOL_FLAG_KERNARG_INIT == 0
}

/// hsa_amd_svm_attribute_t GLOBAL_FLAG and its values (hsa_ext_amd.h,
/// checked against Debian's 5.2 header by tests/abi.rs through simgpu).
pub const HSA_SVM_ATTRIB_GLOBAL_FLAG: u64 = 0;
pub const HSA_SVM_GLOBAL_FLAG_FINE_GRAINED: u64 = 0;
pub const HSA_SVM_GLOBAL_FLAG_COARSE_GRAINED: u64 = 1;

/// The value to set instead, for one SVM attribute pair an application
/// passes to `hsa_amd_svm_attributes_set`: GLOBAL_FLAG fine-grained
/// (coherent, MTYPE_UC on GFX10, amdkfd kfd_svm.c) becomes coarse-grained. None:
/// leave the pair as it is.
pub fn svm_global_flag(attribute: u64, value: u64) -> Option<u64> {
    (attribute == HSA_SVM_ATTRIB_GLOBAL_FLAG && value == HSA_SVM_GLOBAL_FLAG_FINE_GRAINED)
        .then_some(HSA_SVM_GLOBAL_FLAG_COARSE_GRAINED)
}

/// Page size used for rounding; GPU mappings are made of whole 4 KiB pages.
pub const PAGE: usize = 4096;

// ---- Where VRAM lands, and what follows a buffer's end ----------------------

/// ROCr cuts ordinary VRAM from 2 MiB blocks (ROCR-Runtime
/// amd_memory_region.h `block_size_`); libhsakmt aligns every object of 2 MiB
/// or more to 2 MiB and leaves the page after each object unmapped (fmm.c).
/// So the memory after a buffer is mapped up to the end of its block, the
/// next multiple of 2 MiB, and no further.
pub const ROCR_BLOCK: u64 = 2 << 20;
/// [`PAGE`] as an address quantity.
pub const PAGE64: u64 = PAGE as u64;
/// HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED (hsa.h, ROCm 6.0+).
pub const HSA_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED: u32 = 0x205;
/// hsa_amd_memory_type_t MEMORY_TYPE_PINNED.
pub const HSA_MEMORY_TYPE_PINNED: u32 = 1;
/// hsa_access_permission_t HSA_ACCESS_PERMISSION_RW.
pub const HSA_ACCESS_PERMISSION_RW: u32 = 3;

/// The granule objects are aligned to, from the runtime's own settings (the
/// process environment, read once): 2 MiB blocks, or single pages when the
/// fragment allocator is off (`HSA_DISABLE_FRAGMENT_ALLOCATOR=1`, flag.h) or
/// large objects are aligned to less (`HSA_MAX_VA_ALIGN` below 9, fmm.c).
pub fn vram_granule(disable_fragment: Option<&str>, max_va_align: Option<&str>) -> u64 {
    let order = max_va_align.and_then(|v| v.trim().parse::<u32>().ok());
    if disable_fragment == Some("1") || order.is_some_and(|o| o < 9) {
        PAGE64
    } else {
        ROCR_BLOCK
    }
}

/// Where the mapped memory after `[base, base+size)` ends when objects are
/// `granule`-aligned: the end of the buffer's object. `None` on overflow.
pub fn object_end(base: u64, size: u64, granule: u64) -> Option<u64> {
    let end = base.checked_add(size)?;
    end.checked_add(granule - 1).map(|e| e & !(granule - 1))
}

/// The object end after a buffer when fewer than `cover` bytes of mapped
/// memory follow its end there (an over-read of `cover` bytes would fault);
/// `None` when its own block already covers it. This is the only place a
/// device allocation needs anything from rocm-fix: a buffer inside a block
/// is followed by the rest of the block.
pub fn uncovered_end(base: u64, size: u64, cover: u64, granule: u64) -> Option<u64> {
    let end = base.checked_add(size)?;
    let obj = object_end(base, size, granule)?;
    (obj - end < cover).then_some(obj)
}

/// The padding that makes a fallback allocation cover `cover` bytes after
/// the caller's `size` wherever it lands: the padding is part of it.
pub fn fallback_pad(cover: usize) -> usize {
    cover
}

/// The most VRAM padding may hold at once: 1/32 of the GPU's `vram`. A GPU
/// whose size is unknown (0: its pools were not found) gets the budget of the
/// smallest RDNA1/2 cards, 4 GiB (RX 5500 XT, RX 6500 XT): padding must never
/// take the room a workload that fits without rocm-fix needs.
pub fn padding_budget(vram: u64) -> u64 {
    if vram == 0 {
        (4u64 << 30) / 32
    } else {
        vram / 32
    }
}

/// Whether `pad` more bytes of padding fit the budget, with `padded` bytes
/// already in use.
pub fn within_padding_budget(vram: u64, padded: u64, pad: u64) -> bool {
    padded.saturating_add(pad) <= padding_budget(vram)
}

/// The size to allocate so that `pad` bytes of mapped memory follow the
/// caller's `size` bytes: both rounded up to whole pages (an over-read faults
/// only when the next page is unmapped: ROCm/rocm-libraries PR #8909, #8902).
///
/// None when `size` is 0 (nothing to pad: forward as is) or on overflow.
pub fn padded_size(size: usize, pad: usize) -> Option<usize> {
    if size == 0 {
        return None;
    }
    round_up_page(size)?.checked_add(round_up_page(pad)?)
}

fn round_up_page(n: usize) -> Option<usize> {
    Some(n.checked_add(PAGE - 1)? & !(PAGE - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocm_fix_shared::topology::Family;

    #[test]
    fn padding_budget_is_a_32nd_of_known_vram() {
        let vram = 8u64 << 30;
        assert!(within_padding_budget(vram, 0, 256 << 20));
        assert!(!within_padding_budget(vram, 1, 256 << 20));
        assert!(!within_padding_budget(vram, 255 << 20, 2 << 20));
        // Unknown size: the budget of a 4 GiB card.
        assert!(within_padding_budget(0, 0, 128 << 20));
        assert!(!within_padding_budget(0, 64 << 20, 65 << 20));
    }

    const ALL_FAMILIES: [Family; 10] = [
        Family::Rdna1,
        Family::Rdna2,
        Family::Rdna3,
        Family::Rdna4,
        Family::Gcn2,
        Family::Gcn3,
        Family::Gcn4,
        Family::Gcn5,
        Family::Cdna,
        Family::Other,
    ];

    #[test]
    fn header_values() {
        assert_eq!(HIP_HOST_MALLOC_NON_COHERENT, 1 << 31);
        assert_eq!(HIP_HOST_MALLOC_COHERENT, 1 << 30);
        assert_eq!(HIP_HOST_MALLOC_NUMA_USER, 1 << 29);
        assert_eq!(HIP_HOST_ALLOC_VALID, 0x7);
        assert_eq!(HSA_STATUS_ERROR_NOT_INITIALIZED, 0x100B);
        assert_eq!(HIP_MEM_ADVISE_UNSET_COARSE_GRAIN, 101);
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::Auto, Mode::On, Mode::Observe, Mode::Off] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
            assert_eq!(Mode::parse(&m.as_str().to_uppercase()), Some(m));
        }
        assert_eq!(Mode::parse("OBSERVE"), Some(Mode::Observe));
        assert_eq!(Mode::parse(""), None);
        assert_eq!(Mode::parse(" on"), None);
        assert_eq!(Mode::parse("1"), None);
        assert_eq!(Mode::default(), Mode::Auto);
    }

    #[test]
    fn auto_is_active_on_rdna1_and_rdna2_only() {
        for f in ALL_FAMILIES {
            let want = matches!(f, Family::Rdna1 | Family::Rdna2);
            assert_eq!(active(Mode::Auto, f), want, "{f:?}");
        }
    }

    #[test]
    fn on_is_active_everywhere_observe_and_off_nowhere() {
        for f in ALL_FAMILIES {
            assert!(active(Mode::On, f), "{f:?}");
            assert!(!active(Mode::Observe, f), "{f:?}");
            assert!(!active(Mode::Off, f), "{f:?}");
        }
    }

    #[test]
    fn host_malloc_goes_non_coherent() {
        let nc = HIP_HOST_MALLOC_NON_COHERENT;
        assert_eq!(host_malloc_flags(HIP_HOST_MALLOC_DEFAULT), nc);
        assert_eq!(host_malloc_flags(HIP_HOST_MALLOC_COHERENT), nc);
        assert_eq!(
            host_malloc_flags(HIP_HOST_MALLOC_MAPPED),
            HIP_HOST_MALLOC_MAPPED | nc
        );
        assert_eq!(
            host_malloc_flags(HIP_HOST_MALLOC_NUMA_USER),
            HIP_HOST_MALLOC_NUMA_USER | nc
        );
        assert_eq!(
            host_malloc_flags(HIP_HOST_MALLOC_COHERENT | HIP_HOST_MALLOC_MAPPED),
            HIP_HOST_MALLOC_MAPPED | nc
        );
        let keep = HIP_HOST_MALLOC_PORTABLE
            | HIP_HOST_MALLOC_MAPPED
            | HIP_HOST_MALLOC_WRITE_COMBINED
            | HIP_HOST_MALLOC_NUMA_USER;
        assert_eq!(
            host_malloc_flags(keep | HIP_HOST_MALLOC_COHERENT),
            keep | nc
        );
        // Portable / WriteCombined alone are coarse only while HIP_HOST_COHERENT=0.
        assert_eq!(
            host_malloc_flags(HIP_HOST_MALLOC_PORTABLE),
            HIP_HOST_MALLOC_PORTABLE | nc
        );
        assert_eq!(
            host_malloc_flags(HIP_HOST_MALLOC_WRITE_COMBINED),
            HIP_HOST_MALLOC_WRITE_COMBINED | nc
        );
    }

    #[test]
    fn host_malloc_leaves_runtime_errors_alone() {
        let nc = HIP_HOST_MALLOC_NON_COHERENT;
        for f in [
            nc,
            nc | HIP_HOST_MALLOC_MAPPED,
            nc | HIP_HOST_MALLOC_COHERENT,
            HIP_HOST_MALLOC_UNCACHED,
            HIP_HOST_MALLOC_UNCACHED | HIP_HOST_MALLOC_COHERENT,
            0x8,
            0x100 | HIP_HOST_MALLOC_COHERENT,
            u32::MAX,
        ] {
            assert_eq!(host_malloc_flags(f), f, "{f:#x}");
        }
    }

    #[test]
    fn host_alloc_redirects_valid_flags_to_host_malloc() {
        let nc = HIP_HOST_MALLOC_NON_COHERENT;
        assert_eq!(host_alloc_flags(0), HostAlloc::UseHostMalloc(nc));
        for f in 0..=HIP_HOST_ALLOC_VALID {
            assert_eq!(
                host_alloc_flags(f),
                HostAlloc::UseHostMalloc(f | nc),
                "{f:#x}"
            );
        }
    }

    #[test]
    fn host_alloc_forwards_what_it_would_reject() {
        for f in [
            HIP_HOST_MALLOC_COHERENT,
            HIP_HOST_MALLOC_NON_COHERENT,
            HIP_HOST_MALLOC_NUMA_USER,
            HIP_HOST_MALLOC_UNCACHED,
            HIP_HOST_MALLOC_MAPPED | HIP_HOST_MALLOC_UNCACHED,
            0x8,
            u32::MAX,
        ] {
            assert_eq!(host_alloc_flags(f), HostAlloc::Forward, "{f:#x}");
        }
    }

    #[test]
    fn ext_malloc_fine_and_uncached_become_default() {
        assert_eq!(ext_malloc_flags(HIP_DEVICE_MALLOC_FINEGRAINED), 0);
        assert_eq!(ext_malloc_flags(HIP_DEVICE_MALLOC_UNCACHED), 0);
        for f in [
            HIP_DEVICE_MALLOC_DEFAULT,
            HIP_MALLOC_SIGNAL_MEMORY,
            HIP_DEVICE_MALLOC_CONTIGUOUS,
            5,
            HIP_DEVICE_MALLOC_FINEGRAINED | HIP_DEVICE_MALLOC_CONTIGUOUS,
            u32::MAX,
        ] {
            assert_eq!(ext_malloc_flags(f), f, "{f}");
        }
    }

    #[test]
    fn only_coherent_host_memory_counts_as_coherent() {
        for f in [
            0,
            HIP_HOST_MALLOC_COHERENT,
            HIP_HOST_MALLOC_MAPPED,
            HIP_HOST_MALLOC_NUMA_USER,
        ] {
            assert!(host_malloc_is_coherent(f, false), "{f:#x}");
        }
        for f in [
            HIP_HOST_MALLOC_PORTABLE,
            HIP_HOST_MALLOC_WRITE_COMBINED,
            HIP_HOST_MALLOC_NON_COHERENT,
        ] {
            assert!(!host_malloc_is_coherent(f, false), "{f:#x}");
        }
        assert!(
            host_malloc_is_coherent(HIP_HOST_MALLOC_PORTABLE, true),
            "HIP_HOST_COHERENT=1"
        );
        assert!(!host_malloc_is_coherent(HIP_HOST_MALLOC_NON_COHERENT, true));
    }

    #[test]
    fn ext_malloc_failures_stay_failures() {
        let fine = HIP_DEVICE_MALLOC_FINEGRAINED;
        assert!(
            !ext_malloc_rewrite_ok(fine, Some(60_200_000), false),
            "6.2: fails natively"
        );
        assert!(ext_malloc_rewrite_ok(fine, Some(60_200_000), true));
        assert!(
            ext_malloc_rewrite_ok(fine, Some(60_400_000), false),
            "6.3+: coarse natively"
        );
        assert!(!ext_malloc_rewrite_ok(
            HIP_DEVICE_MALLOC_UNCACHED,
            Some(50_600_000),
            false
        ));
        assert!(ext_malloc_rewrite_ok(
            HIP_DEVICE_MALLOC_UNCACHED,
            Some(50_700_000),
            false
        ));
        assert!(
            !ext_malloc_rewrite_ok(fine, None, true),
            "unknown version: leave it"
        );
        assert!(ext_malloc_rewrite_ok(
            HIP_DEVICE_MALLOC_DEFAULT,
            None,
            false
        ));
    }

    #[test]
    fn svm_fine_grained_becomes_coarse_grained() {
        assert_eq!(svm_global_flag(0, 0), Some(1));
        assert_eq!(svm_global_flag(0, 1), None);
        assert_eq!(svm_global_flag(0, 2), None, "INDETERMINATE is left alone");
        assert_eq!(
            svm_global_flag(0x200, 0),
            None,
            "AGENT_ACCESSIBLE with agent 0"
        );
    }

    #[test]
    fn mem_advise_replaces_only_unset_coarse_grain() {
        assert_eq!(
            mem_advise(HIP_MEM_ADVISE_UNSET_COARSE_GRAIN),
            AdviseAction::Replace(HIP_MEM_ADVISE_SET_COARSE_GRAIN)
        );
        for a in [1, 2, 3, 4, 5, 6, 100, 0, -1, 102, i32::MIN, i32::MAX] {
            assert_eq!(mem_advise(a), AdviseAction::Forward, "{a}");
        }
    }

    #[test]
    fn hsa_pool_rewrite_targets_fine_pools_but_not_kernarg() {
        assert!(hsa_pool_rewrite(HSA_POOL_FLAG_FINE_GRAINED));
        assert!(hsa_pool_rewrite(HSA_POOL_FLAG_EXTENDED_SCOPE_FINE_GRAINED));
        assert!(!hsa_pool_rewrite(
            HSA_POOL_FLAG_FINE_GRAINED | HSA_POOL_FLAG_KERNARG_INIT
        ));
        assert!(!hsa_pool_rewrite(HSA_POOL_FLAG_COARSE_GRAINED));
        assert!(!hsa_pool_rewrite(HSA_POOL_FLAG_KERNARG_INIT));
        assert!(!hsa_pool_rewrite(0));
    }

    #[test]
    fn a_buffer_inside_a_block_is_covered_by_the_rest_of_it() {
        let b = ROCR_BLOCK;
        // 4 KiB at a block start: 2 MiB - 4 KiB of block follow it.
        assert_eq!(uncovered_end(0x7f00_0000_0000, 4096, 65536, b), None);
        // The last 4 KiB of a block: only the guard page follows.
        let base = 0x7f00_0000_0000 + b - 4096;
        assert_eq!(
            uncovered_end(base, 4096, 4096, b),
            Some(0x7f00_0000_0000 + b)
        );
        // 60 KiB before the block end: covered at 4 KiB, not at 64 KiB.
        let base = 0x7f00_0000_0000;
        assert_eq!(uncovered_end(base, b - 61_440, 4096, b), None);
        assert_eq!(uncovered_end(base, b - 61_440, 65536, b), Some(base + b));
    }

    #[test]
    fn pytorch_segments_end_at_a_block_end() {
        // kSmallBuffer (2 MiB), kLargeBuffer (20 MiB), a 2 MiB-rounded 200 MiB segment.
        let base = 0x7f12_0000_0000u64;
        for size in [2u64 << 20, 20 << 20, 200 << 20] {
            assert_eq!(
                uncovered_end(base, size, 4096, ROCR_BLOCK),
                Some(base + size),
                "{size}"
            );
        }
        // 3 MiB takes a 4 MiB block whose tail is never handed out.
        assert_eq!(uncovered_end(base, 3 << 20, 65536, ROCR_BLOCK), None);
        // Without the fragment allocator every object is page-granular.
        assert_eq!(uncovered_end(base, 100, 4096, PAGE64), Some(base + 4096));
        assert_eq!(uncovered_end(base, 100, 3996, PAGE64), None);
        assert_eq!(uncovered_end(u64::MAX - 10, 100, 4096, PAGE64), None);
    }

    #[test]
    fn the_granule_follows_the_runtimes_own_settings() {
        assert_eq!(vram_granule(None, None), ROCR_BLOCK);
        assert_eq!(vram_granule(Some("0"), Some("9")), ROCR_BLOCK);
        assert_eq!(vram_granule(Some("1"), None), PAGE64);
        assert_eq!(vram_granule(None, Some("8")), PAGE64);
        assert_eq!(vram_granule(None, Some("18")), ROCR_BLOCK);
    }

    #[test]
    fn padded_size_rounds_to_pages() {
        assert_eq!(padded_size(1, 0), Some(4096));
        assert_eq!(padded_size(4096, 0), Some(4096));
        assert_eq!(padded_size(4097, 0), Some(8192));
        assert_eq!(padded_size(100, 1), Some(8192));
        assert_eq!(padded_size(100, 1 << 20), Some(4096 + (1 << 20)));
        assert_eq!(padded_size(1 << 20, 65536), Some((1 << 20) + 65536));
        assert_eq!(padded_size(4096, 4095), Some(8192));
    }

    #[test]
    fn padded_size_rejects_zero_and_overflow() {
        assert_eq!(padded_size(0, 0), None);
        assert_eq!(padded_size(0, 4096), None);
        assert_eq!(padded_size(usize::MAX, 0), None);
        assert_eq!(padded_size(usize::MAX - 4094, 0), None);
        assert_eq!(padded_size(1, usize::MAX), None);
        assert_eq!(padded_size(usize::MAX / 2 + 1, usize::MAX / 2 + 1), None);
        let top = usize::MAX & !(PAGE - 1);
        assert_eq!(padded_size(top, 0), Some(top));
        assert_eq!(padded_size(top - PAGE, 1), Some(top));
        assert_eq!(padded_size(top, 1), None);
    }
}
