//! The simulated device against the real ROCm 5.2 runtime from Debian:
//! the same names at the same version nodes, and the constants and layouts
//! the simulation uses equal to those of the real headers (via bindgen,
//! build.rs). Needs the `abi-check` feature (scripts/test enables it).
#![cfg(feature = "abi-check")]
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all
)]

mod common;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

#[allow(unused_imports)]
mod real {
    include!(concat!(env!("OUT_DIR"), "/real_rocm.rs"));
}
#[allow(unused_imports)]
mod sim {
    include!(concat!(env!("OUT_DIR"), "/simgpu_abi.rs"));
}

macro_rules! same_consts {
    ($($name:ident),* $(,)?) => {{
        let mut bad = Vec::new();
        $( if real::$name as u32 != sim::$name as u32 {
            bad.push(format!("{}: real {} sim {}", stringify!($name), real::$name as u32, sim::$name as u32));
        } )*
        assert!(bad.is_empty(), "constants differ: {bad:#?}");
    }};
}

#[test]
fn constants_match_the_real_headers() {
    same_consts!(
        HSA_STATUS_SUCCESS,
        HSA_STATUS_INFO_BREAK,
        HSA_STATUS_ERROR,
        HSA_STATUS_ERROR_INVALID_ARGUMENT,
        HSA_STATUS_ERROR_INVALID_ALLOCATION,
        HSA_STATUS_ERROR_INVALID_AGENT,
        HSA_STATUS_ERROR_OUT_OF_RESOURCES,
        HSA_STATUS_ERROR_NOT_INITIALIZED,
        HSA_AGENT_INFO_NAME,
        HSA_AGENT_INFO_DEVICE,
        HSA_AMD_AGENT_INFO_CHIP_ID,
        HSA_AMD_AGENT_INFO_DRIVER_NODE_ID,
        HSA_AMD_AGENT_INFO_PRODUCT_NAME,
        HSA_AMD_AGENT_INFO_ASIC_REVISION,
        HSA_DEVICE_TYPE_CPU,
        HSA_DEVICE_TYPE_GPU,
        HSA_AMD_SYSTEM_INFO_SVM_SUPPORTED,
        HSA_AMD_SYSTEM_INFO_SVM_ACCESSIBLE_BY_DEFAULT,
        HSA_AMD_MEMORY_POOL_INFO_SEGMENT,
        HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS,
        HSA_AMD_MEMORY_POOL_INFO_SIZE,
        HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED,
        HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE,
        HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALIGNMENT,
        HSA_AMD_MEMORY_POOL_INFO_ACCESSIBLE_BY_ALL,
        HSA_AMD_MEMORY_POOL_INFO_ALLOC_MAX_SIZE,
        HSA_AMD_SEGMENT_GLOBAL,
        HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT,
        HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED,
        HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED,
        HSA_AMD_GPU_MEMORY_FAULT_EVENT,
        HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT,
        HSA_AMD_MEMORY_FAULT_READ_ONLY,
        HSA_AMD_MEMORY_FAULT_NX,
        HSA_AMD_MEMORY_FAULT_HOST_ONLY,
        HSA_AMD_MEMORY_FAULT_DRAMECC,
        HSA_AMD_MEMORY_FAULT_IMPRECISE,
        HSA_AMD_MEMORY_FAULT_SRAMECC,
        HSA_AMD_MEMORY_FAULT_HANG,
        HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG,
        HSA_AMD_SVM_ATTRIB_READ_ONLY,
        HSA_AMD_SVM_ATTRIB_PREFERRED_LOCATION,
        HSA_AMD_SVM_ATTRIB_PREFETCH_LOCATION,
        HSA_AMD_SVM_ATTRIB_READ_MOSTLY,
        HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE,
        HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE_IN_PLACE,
        HSA_AMD_SVM_ATTRIB_AGENT_NO_ACCESS,
        HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED,
        HSA_AMD_SVM_GLOBAL_FLAG_COARSE_GRAINED,
        HSA_AMD_SVM_GLOBAL_FLAG_INDETERMINATE,
        hipSuccess,
        hipErrorInvalidValue,
        hipErrorOutOfMemory,
        hipErrorNotInitialized,
        hipErrorNoDevice,
        hipErrorInvalidDevice,
        hipErrorSharedObjectInitFailed,
        hipErrorIllegalAddress,
        hipErrorLaunchFailure,
        hipErrorNotSupported,
        hipErrorUnknown,
        hipHostMallocDefault,
        hipHostMallocPortable,
        hipHostMallocMapped,
        hipHostMallocWriteCombined,
        hipHostMallocNumaUser,
        hipHostMallocCoherent,
        hipHostMallocNonCoherent,
        hipDeviceMallocDefault,
        hipDeviceMallocFinegrained,
        hipMallocSignalMemory,
        hipMemAttachGlobal,
        hipMemAttachHost,
        hipMemAttachSingle,
        hipMemAdviseSetReadMostly,
        hipMemAdviseUnsetReadMostly,
        hipMemAdviseSetPreferredLocation,
        hipMemAdviseUnsetPreferredLocation,
        hipMemAdviseSetAccessedBy,
        hipMemAdviseUnsetAccessedBy,
        hipMemAdviseSetCoarseGrain,
        hipMemAdviseUnsetCoarseGrain,
        hipMemcpyHostToHost,
        hipMemcpyHostToDevice,
        hipMemcpyDeviceToHost,
        hipMemcpyDeviceToDevice,
        hipMemcpyDefault,
    );
}

#[test]
fn layouts_match_the_real_headers() {
    assert_eq!(
        size_of::<real::hsa_agent_t>(),
        size_of::<sim::hsa_agent_t>()
    );
    assert_eq!(
        size_of::<real::hsa_amd_memory_pool_t>(),
        size_of::<sim::hsa_amd_memory_pool_t>()
    );
    assert_eq!(
        size_of::<real::hsa_amd_gpu_memory_fault_info_t>(),
        size_of::<sim::hsa_amd_gpu_memory_fault_info_t>()
    );
    assert_eq!(
        offset_of!(real::hsa_amd_gpu_memory_fault_info_t, virtual_address),
        offset_of!(sim::hsa_amd_gpu_memory_fault_info_t, virtual_address)
    );
    assert_eq!(
        offset_of!(real::hsa_amd_gpu_memory_fault_info_t, fault_reason_mask),
        offset_of!(sim::hsa_amd_gpu_memory_fault_info_t, fault_reason_mask)
    );
    // The 5.2 event has only the memory_fault member: the union starts at 8 either way.
    assert_eq!(
        offset_of!(real::hsa_amd_event_t, __bindgen_anon_1),
        offset_of!(sim::hsa_amd_event_t, __bindgen_anon_1)
    );
    assert_eq!(offset_of!(real::hsa_amd_event_t, __bindgen_anon_1), 8);
    assert!(size_of::<sim::hsa_amd_event_t>() >= size_of::<real::hsa_amd_event_t>());
    assert_eq!(
        size_of::<real::hsa_amd_svm_attribute_pair_t>(),
        size_of::<sim::hsa_amd_svm_attribute_pair_t>()
    );
    assert_eq!(
        size_of::<real::hipDeviceArch_t>(),
        size_of::<sim::hipDeviceArch_t>()
    );
    // hipGetDeviceProperties' struct of 5.x (the simulation's R0000).
    macro_rules! same_offsets {
        ($($f:ident),*) => { $( assert_eq!(
            offset_of!(real::hipDeviceProp_t, $f), offset_of!(sim::hipDeviceProp_tR0000, $f), stringify!($f)); )* };
    }
    same_offsets!(
        name,
        totalGlobalMem,
        warpSize,
        major,
        minor,
        multiProcessorCount,
        arch,
        pciDeviceID,
        gcnArch,
        gcnArchName,
        hdpMemFlushCntl,
        memPitch,
        isLargeBar,
        asicRevision,
        managedMemory,
        pageableMemoryAccessUsesHostPageTables
    );
    assert_eq!(
        size_of::<real::hipDeviceProp_t>(),
        size_of::<sim::hipDeviceProp_tR0000>()
    );
}

/// name -> version node of the dynamic symbols a library defines.
fn exports(path: &str) -> BTreeMap<String, String> {
    let out = std::process::Command::new("objdump")
        .args(["-T", path])
        .output()
        .expect("objdump");
    assert!(out.status.success(), "objdump {path}");
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[3] != "*UND*" && (line.contains(" DF ") || cols[3] == "*ABS*") {
            map.insert(
                cols[cols.len() - 1].to_string(),
                cols[cols.len() - 2].to_string(),
            );
        }
    }
    map
}

fn imports(path: &str) -> BTreeMap<String, String> {
    let out = std::process::Command::new("objdump")
        .args(["-T", path])
        .output()
        .expect("objdump");
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if line.contains("*UND*") && cols.len() >= 2 {
            map.insert(
                cols[cols.len() - 1].to_string(),
                cols[cols.len() - 2]
                    .trim_matches(|c| c == '(' || c == ')')
                    .to_string(),
            );
        }
    }
    map
}

const REAL_HIP: &str = "/usr/lib/x86_64-linux-gnu/libamdhip64.so.5";
const REAL_HSA: &str = "/usr/lib/x86_64-linux-gnu/libhsa-runtime64.so.1";

#[test]
fn exports_sit_at_the_real_version_nodes() {
    // The 5.2 build (lib5) exports exactly what the installed Debian 5.2 runtime
    // exports; the 6.4 build puts every name the two share at the same node.
    // (Every release against its own real library: tests/simgpu_versions.rs.)
    let lib = common::simgpu_lib();
    let sim_hsa = exports(lib.join("libhsa-runtime64.so.1").to_str().unwrap());
    let sim_hip = exports(lib.join("libamdhip64.so.6").to_str().unwrap());
    let sim_hip5 = exports(lib.join("../lib5/libamdhip64.so.5").to_str().unwrap());
    let sim_hsa5 = exports(lib.join("../lib5/libhsa-runtime64.so.1").to_str().unwrap());
    let real_hsa = exports(REAL_HSA);
    let real_hip = exports(REAL_HIP);
    let functions = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        // Functions only: the version nodes' own *ABS* symbols are named as the node.
        m.iter()
            // and imports show their version in parentheses.
            .filter(|(n, v)| {
                n.as_str() != v.as_str() && !v.starts_with('(') && !n.starts_with("simgpu")
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    assert_eq!(functions(&sim_hip5), functions(&real_hip));
    assert_eq!(functions(&sim_hsa5), functions(&real_hsa));
    let mut checked = 0;
    for (name, node) in functions(&sim_hip) {
        if let Some(real) = real_hip.get(&name) {
            assert_eq!(real, &node, "{name}");
            checked += 1;
        }
    }
    for (name, node) in functions(&sim_hsa) {
        if let Some(real) = real_hsa.get(&name) {
            assert_eq!(real, &node, "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 400, "only {checked} names compared");
    assert_eq!(
        sim_hip
            .get("hipGetDevicePropertiesR0600")
            .map(String::as_str),
        Some("hip_6.0")
    );
    assert_eq!(
        sim_hip.get("hipGetProcAddress").map(String::as_str),
        Some("hip_6.1")
    );
    let nodes = |m: &BTreeMap<String, String>| {
        m.values()
            .filter(|v| v.starts_with("hip_"))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    let ours = nodes(&sim_hip);
    for n in nodes(&real_hip) {
        assert!(ours.contains(&n), "version node {n} missing");
    }
    for n in ["hip_6.2", "hip_6.4"] {
        assert!(ours.contains(n), "{n}");
    }
    assert!(!ours.contains("hip_5.4") && !ours.contains("hip_6.3"));
}

#[test]
fn hip_calls_the_hsa_allocator_through_a_versioned_plt_reference_like_the_real_one() {
    let lib = common::simgpu_lib();
    let real = imports(REAL_HIP);
    let sim = imports(lib.join("libamdhip64.so.6").to_str().unwrap());
    assert_eq!(
        real.get("hsa_amd_memory_pool_allocate").map(String::as_str),
        Some("ROCR_1")
    );
    assert_eq!(
        sim.get("hsa_amd_memory_pool_allocate"),
        real.get("hsa_amd_memory_pool_allocate")
    );
    let relocs = std::process::Command::new("readelf")
        .args(["-rW"])
        .arg(lib.join("libamdhip64.so.6"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&relocs.stdout);
    assert!(
        text.lines().any(|l| l.contains("R_X86_64_JUMP_SLO")
            && l.contains("hsa_amd_memory_pool_allocate@ROCR_1")),
        "{text}"
    );
}

#[test]
fn sonames_match() {
    let lib = common::simgpu_lib();
    let soname = |p: &std::path::Path| {
        let o = std::process::Command::new("readelf")
            .arg("-dW")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.contains("SONAME"))
            .unwrap_or("")
            .to_string()
    };
    assert!(soname(&lib.join("libamdhip64.so.6")).contains("[libamdhip64.so.6]"));
    assert!(soname(&lib.join("libhsa-runtime64.so.1")).contains("[libhsa-runtime64.so.1]"));
    assert!(soname(std::path::Path::new(REAL_HSA)).contains("[libhsa-runtime64.so.1]"));
    assert!(std::fs::read_link(lib.join("libamdhip64.so"))
        .unwrap()
        .ends_with("libamdhip64.so.6"));
}
