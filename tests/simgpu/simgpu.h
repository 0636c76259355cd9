/*
 * simgpu: the simulated ROCm device (a stand-in libhsa-runtime64.so.1 and
 * libamdhip64.so.6) that rocm-fix is tested against on machines without an
 * AMD GPU.
 *
 * These are the project's own declarations of the ROCm ABI subset the
 * simulation implements, written from the primary sources each section cites
 * (ROCR-Runtime's hsa.h and hsa_ext_amd.h, HIP's hip_runtime_api.h). The
 * simulation follows the primary sources it cites, by repository, path and
 * tag; FAULT-MODEL.md lists them per rule. The values and layouts are checked
 * against the real Debian ROCm 5.2 headers by tests/abi.rs; nothing here is
 * copied from ROCm.
 *
 * Test programs include this header and link with -lamdhip64 -lhsa-runtime64
 * from the folder scripts/simgpu-env puts first on LD_LIBRARY_PATH.
 */
#ifndef SIMGPU_H
#define SIMGPU_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- HSA (hsa.h, hsa_ext_amd.h; ROCR-Runtime rocm-6.2.4) --------------- */
typedef uint32_t hsa_status_t;
#define HSA_STATUS_SUCCESS 0x0
#define HSA_STATUS_INFO_BREAK 0x1
#define HSA_STATUS_ERROR 0x1000
#define HSA_STATUS_ERROR_INVALID_ARGUMENT 0x1001
#define HSA_STATUS_ERROR_INVALID_ALLOCATION 0x1003
#define HSA_STATUS_ERROR_INVALID_AGENT 0x1004
#define HSA_STATUS_ERROR_OUT_OF_RESOURCES 0x1008
#define HSA_STATUS_ERROR_NOT_INITIALIZED 0x100B

typedef struct hsa_agent_s { uint64_t handle; } hsa_agent_t;
typedef struct hsa_amd_memory_pool_s { uint64_t handle; } hsa_amd_memory_pool_t;

/* hsa_agent_info_t subset */
#define HSA_AGENT_INFO_NAME 0
#define HSA_AGENT_INFO_DEVICE 17
#define HSA_AMD_AGENT_INFO_CHIP_ID 0xA000
#define HSA_AMD_AGENT_INFO_DRIVER_NODE_ID 0xA004
#define HSA_AMD_AGENT_INFO_PRODUCT_NAME 0xA009
#define HSA_AMD_AGENT_INFO_ASIC_REVISION 0xA012
#define HSA_AMD_AGENT_INFO_MEMORY_AVAIL 0xA015
/* hsa_device_type_t */
#define HSA_DEVICE_TYPE_CPU 0
#define HSA_DEVICE_TYPE_GPU 1
/* hsa_system_info_t subset */
#define HSA_AMD_SYSTEM_INFO_SVM_SUPPORTED 0x201
#define HSA_AMD_SYSTEM_INFO_SVM_ACCESSIBLE_BY_DEFAULT 0x202
#define HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED 0x205

/* hsa_amd_memory_pool_info_t subset */
#define HSA_AMD_MEMORY_POOL_INFO_SEGMENT 0
#define HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS 1
#define HSA_AMD_MEMORY_POOL_INFO_SIZE 2
#define HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED 5
#define HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE 6
#define HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALIGNMENT 7
#define HSA_AMD_MEMORY_POOL_INFO_ACCESSIBLE_BY_ALL 15
#define HSA_AMD_MEMORY_POOL_INFO_ALLOC_MAX_SIZE 16
#define HSA_AMD_MEMORY_POOL_INFO_LOCATION 17
#define HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_REC_GRANULE 18
#define HSA_AMD_SEGMENT_GLOBAL 0
#define HSA_AMD_MEMORY_POOL_LOCATION_CPU 0
#define HSA_AMD_MEMORY_POOL_LOCATION_GPU 1
/* hsa_amd_memory_pool_global_flag_t */
#define HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT 1
#define HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED 2
#define HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED 4
#define HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED 8

/* Fault event (hsa_ext_amd.h). */
#define HSA_AMD_GPU_MEMORY_FAULT_EVENT 0
#define HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT (1u << 0)
#define HSA_AMD_MEMORY_FAULT_READ_ONLY (1u << 1)
#define HSA_AMD_MEMORY_FAULT_NX (1u << 2)
#define HSA_AMD_MEMORY_FAULT_HOST_ONLY (1u << 3)
#define HSA_AMD_MEMORY_FAULT_DRAMECC (1u << 4)
#define HSA_AMD_MEMORY_FAULT_IMPRECISE (1u << 5)
#define HSA_AMD_MEMORY_FAULT_SRAMECC (1u << 6)
#define HSA_AMD_MEMORY_FAULT_HANG (1u << 31)

typedef struct hsa_amd_gpu_memory_fault_info_s {
  hsa_agent_t agent;          /* @0 */
  uint64_t virtual_address;   /* @8 */
  uint32_t fault_reason_mask; /* @16, size 24 */
} hsa_amd_gpu_memory_fault_info_t;

typedef struct hsa_amd_event_s {
  uint32_t event_type; /* @0 */
  union {              /* @8 */
    hsa_amd_gpu_memory_fault_info_t memory_fault;
    uint8_t reserved_[24];
  };
} hsa_amd_event_t; /* size 32 */

typedef hsa_status_t (*hsa_amd_system_event_callback_t)(const hsa_amd_event_t *event, void *data);

/* SVM attributes (hsa_ext_amd.h, checked by tests/abi.rs). */
#define HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG 0
#define HSA_AMD_SVM_ATTRIB_READ_ONLY 1
#define HSA_AMD_SVM_ATTRIB_PREFERRED_LOCATION 4
#define HSA_AMD_SVM_ATTRIB_PREFETCH_LOCATION 5
#define HSA_AMD_SVM_ATTRIB_READ_MOSTLY 6
#define HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE 0x200
#define HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE_IN_PLACE 0x201
#define HSA_AMD_SVM_ATTRIB_AGENT_NO_ACCESS 0x202
#define HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED 0
#define HSA_AMD_SVM_GLOBAL_FLAG_COARSE_GRAINED 1
#define HSA_AMD_SVM_GLOBAL_FLAG_INDETERMINATE 2
typedef struct hsa_amd_svm_attribute_pair_s {
  uint64_t attribute;
  uint64_t value;
} hsa_amd_svm_attribute_pair_t;

hsa_status_t hsa_init(void);
hsa_status_t hsa_shut_down(void);
hsa_status_t hsa_system_get_info(uint32_t attribute, void *value);
hsa_status_t hsa_iterate_agents(hsa_status_t (*callback)(hsa_agent_t agent, void *data), void *data);
hsa_status_t hsa_agent_get_info(hsa_agent_t agent, uint32_t attribute, void *value);
hsa_status_t hsa_amd_agent_iterate_memory_pools(hsa_agent_t agent,
    hsa_status_t (*callback)(hsa_amd_memory_pool_t pool, void *data), void *data);
hsa_status_t hsa_amd_memory_pool_get_info(hsa_amd_memory_pool_t pool, uint32_t attribute, void *value);
hsa_status_t hsa_amd_memory_pool_allocate(hsa_amd_memory_pool_t pool, size_t size, uint32_t flags, void **ptr);
hsa_status_t hsa_amd_memory_pool_free(void *ptr);
hsa_status_t hsa_amd_register_system_event_handler(hsa_amd_system_event_callback_t callback, void *data);
hsa_status_t hsa_amd_svm_attributes_set(void *ptr, size_t size, hsa_amd_svm_attribute_pair_t *attribute_list,
                                        size_t attribute_count);
hsa_status_t hsa_amd_agents_allow_access(uint32_t num_agents, const hsa_agent_t *agents, const uint32_t *flags,
                                         const void *ptr);

/* Virtual memory (hsa_ext_amd.h, ROCm 6.0+). */
#define HSA_STATUS_ERROR_RESOURCE_FREE 0x1009
typedef struct hsa_amd_vmem_alloc_handle_s { uint64_t handle; } hsa_amd_vmem_alloc_handle_t;
typedef enum { MEMORY_TYPE_NONE, MEMORY_TYPE_PINNED } hsa_amd_memory_type_t;
typedef enum { HSA_ACCESS_PERMISSION_NONE = 0, HSA_ACCESS_PERMISSION_RO = 1, HSA_ACCESS_PERMISSION_WO = 2,
               HSA_ACCESS_PERMISSION_RW = 3 } hsa_access_permission_t;
typedef struct hsa_amd_memory_access_desc_s {
  hsa_access_permission_t permissions;
  hsa_agent_t agent_handle;
} hsa_amd_memory_access_desc_t;
hsa_status_t hsa_amd_vmem_address_reserve(void **va, size_t size, uint64_t address, uint64_t flags);
hsa_status_t hsa_amd_vmem_address_free(void *va, size_t size);
hsa_status_t hsa_amd_vmem_handle_create(hsa_amd_memory_pool_t pool, size_t size, hsa_amd_memory_type_t type,
                                        uint64_t flags, hsa_amd_vmem_alloc_handle_t *memory_handle);
hsa_status_t hsa_amd_vmem_handle_release(hsa_amd_vmem_alloc_handle_t memory_handle);
hsa_status_t hsa_amd_vmem_map(void *va, size_t size, size_t in_offset, hsa_amd_vmem_alloc_handle_t memory_handle,
                              uint64_t flags);
hsa_status_t hsa_amd_vmem_unmap(void *va, size_t size);
hsa_status_t hsa_amd_vmem_set_access(void *va, size_t size, const hsa_amd_memory_access_desc_t *desc,
                                     size_t desc_cnt);
hsa_status_t hsa_amd_svm_attributes_get(void *ptr, size_t size, hsa_amd_svm_attribute_pair_t *attribute_list,
                                        size_t attribute_count);

/* ---- HIP (hip_runtime_api.h, HIP rocm-6.2.2) -------------------------- */
typedef int hipError_t;
#define hipSuccess 0
#define hipErrorInvalidValue 1
#define hipErrorOutOfMemory 2
#define hipErrorNotInitialized 3
#define hipErrorInvalidSymbol 13
#define hipErrorInvalidDeviceFunction 98
#define hipErrorNoDevice 100
#define hipErrorInvalidDevice 101
#define hipErrorInvalidImage 200
#define hipErrorNoBinaryForGpu 209
#define hipErrorSharedObjectInitFailed 303
#define hipErrorInvalidHandle 400 /* = hipErrorInvalidResourceHandle */
#define hipErrorNotReady 600
#define hipErrorIllegalAddress 700
#define hipErrorLaunchFailure 719
#define hipErrorNotSupported 801
#define hipErrorUnknown 999

/* hipDeviceAttribute_t values the simulation answers (the same in the 5.2, 6.4
 * and 7.2 headers; VirtualMemoryManagementSupported is 6.x+). */
#define hipDeviceAttributeClockRate 5
#define hipDeviceAttributeIntegrated 16
#define hipDeviceAttributeComputeCapabilityMajor 23
#define hipDeviceAttributeManagedMemory 24
#define hipDeviceAttributeMaxThreadsPerBlock 56
#define hipDeviceAttributeComputeCapabilityMinor 61
#define hipDeviceAttributeMultiprocessorCount 63
#define hipDeviceAttributePciDeviceId 68
#define hipDeviceAttributeTotalGlobalMem 84
#define hipDeviceAttributeWarpSize 87
#define hipDeviceAttributeVirtualMemoryManagementSupported 89
#define HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED 0x205
#define HSA_ISA_INFO_NAME_LENGTH 0
#define HSA_ISA_INFO_NAME 1
typedef struct hsa_isa_s { uint64_t handle; } hsa_isa_t;
hsa_status_t hsa_agent_iterate_isas(hsa_agent_t agent, hsa_status_t (*cb)(hsa_isa_t, void *), void *data);
hsa_status_t hsa_isa_get_info_alt(hsa_isa_t isa, uint32_t attribute, void *value);

typedef struct simgpu_stream *hipStream_t;
typedef struct simgpu_event *hipEvent_t;
typedef struct simgpu_module *hipModule_t;
typedef struct simgpu_function *hipFunction_t;
typedef struct { uint32_t x, y, z; } dim3;

#define hipHostMallocDefault 0x0u
#define hipHostMallocPortable 0x1u
#define hipHostMallocMapped 0x2u
#define hipHostMallocWriteCombined 0x4u
#define hipHostMallocNumaUser 0x20000000u
#define hipHostMallocCoherent 0x40000000u
#define hipHostMallocNonCoherent 0x80000000u

#define hipDeviceMallocDefault 0x0u
#define hipDeviceMallocFinegrained 0x1u
#define hipMallocSignalMemory 0x2u
#define hipDeviceMallocUncached 0x3u
#define hipDeviceMallocContiguous 0x4u

#define hipMemAttachGlobal 0x1u
#define hipMemAttachHost 0x2u
#define hipMemAttachSingle 0x4u

#define hipMemAdviseSetReadMostly 1
#define hipMemAdviseUnsetReadMostly 2
#define hipMemAdviseSetPreferredLocation 3
#define hipMemAdviseUnsetPreferredLocation 4
#define hipMemAdviseSetAccessedBy 5
#define hipMemAdviseUnsetAccessedBy 6
#define hipMemAdviseSetCoarseGrain 100
#define hipMemAdviseUnsetCoarseGrain 101

#define hipMemcpyHostToHost 0
#define hipMemcpyHostToDevice 1
#define hipMemcpyDeviceToHost 2
#define hipMemcpyDeviceToDevice 3
#define hipMemcpyDefault 4

#define HIP_GET_PROC_ADDRESS_SUCCESS 0
#define HIP_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND 1
#define HIP_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT 2

typedef struct hipUUID_t { char bytes[16]; } hipUUID;
typedef struct { uint32_t bits; } hipDeviceArch_t; /* a 17-bit bitfield block in the real header: 4 bytes */

/* The device properties of hipGetDeviceProperties up to HIP 5.x ("R0000"),
 * the layout Debian's 5.2 header declares as hipDeviceProp_t. */
typedef struct hipDeviceProp_tR0000 {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int clockRate;
  int memoryClockRate;
  int memoryBusWidth;
  size_t totalConstMem;
  int major;
  int minor;
  int multiProcessorCount;
  int l2CacheSize;
  int maxThreadsPerMultiProcessor;
  int computeMode;
  int clockInstructionRate;
  hipDeviceArch_t arch;
  int concurrentKernels;
  int pciDomainID;
  int pciBusID;
  int pciDeviceID;
  size_t maxSharedMemoryPerMultiProcessor;
  int isMultiGpuBoard;
  int canMapHostMemory;
  int gcnArch;
  char gcnArchName[256];
  int integrated;
  int cooperativeLaunch;
  int cooperativeMultiDeviceLaunch;
  int maxTexture1DLinear;
  int maxTexture1D;
  int maxTexture2D[2];
  int maxTexture3D[3];
  unsigned int *hdpMemFlushCntl;
  unsigned int *hdpRegFlushCntl;
  size_t memPitch;
  size_t textureAlignment;
  size_t texturePitchAlignment;
  int kernelExecTimeoutEnabled;
  int ECCEnabled;
  int tccDriver;
  int cooperativeMultiDeviceUnmatchedFunc;
  int cooperativeMultiDeviceUnmatchedGridDim;
  int cooperativeMultiDeviceUnmatchedBlockDim;
  int cooperativeMultiDeviceUnmatchedSharedMem;
  int isLargeBar;
  int asicRevision;
  int managedMemory;
  int directManagedMemAccessFromHost;
  int concurrentManagedAccess;
  int pageableMemoryAccess;
  int pageableMemoryAccessUsesHostPageTables;
} hipDeviceProp_tR0000;

/* The HIP 6.0+ layout (hipDeviceProp_tR0600). Only the fields up to and
 * around gcnArchName are named; the rest are kept as sized blocks so the
 * offsets match the 6.x header (1472 bytes in all). */
typedef struct hipDeviceProp_tR0600 {
  char name[256];                /* @0 */
  hipUUID uuid;                  /* @256 */
  char luid[8];                  /* @272 */
  unsigned int luidDeviceNodeMask; /* @280 */
  size_t totalGlobalMem;         /* @288 */
  size_t sharedMemPerBlock;      /* @296 */
  int regsPerBlock;              /* @304 */
  int warpSize;                  /* @308 */
  size_t memPitch;               /* @312 */
  int maxThreadsPerBlock;        /* @320 */
  int maxThreadsDim[3];
  int maxGridSize[3];
  int clockRate;
  size_t totalConstMem;          /* @352 */
  int major;                     /* @360 */
  int minor;                     /* @364 */
  uint8_t fields_368_[412];      /* textureAlignment .. unifiedFunctionPointers */
  int reserved[63];              /* @780 */
  int hipReserved[32];           /* @1032 */
  char gcnArchName[256];         /* @1160 */
  size_t maxSharedMemoryPerMultiProcessor; /* @1416 */
  int clockInstructionRate;
  hipDeviceArch_t arch;
  unsigned int *hdpMemFlushCntl;
  unsigned int *hdpRegFlushCntl;
  int cooperativeMultiDeviceUnmatchedFunc;
  int cooperativeMultiDeviceUnmatchedGridDim;
  int cooperativeMultiDeviceUnmatchedBlockDim;
  int cooperativeMultiDeviceUnmatchedSharedMem;
  int isLargeBar;
  int asicRevision;
} hipDeviceProp_tR0600;

hipError_t hipInit(unsigned int flags);
hipError_t hipGetDeviceCount(int *count);
hipError_t hipSetDevice(int device);
hipError_t hipGetDevice(int *device);
hipError_t hipGetDeviceProperties(hipDeviceProp_tR0000 *prop, int device);
hipError_t hipGetDevicePropertiesR0600(hipDeviceProp_tR0600 *prop, int device);
hipError_t hipMalloc(void **ptr, size_t size);
hipError_t hipFree(void *ptr);
hipError_t hipHostMalloc(void **ptr, size_t size, unsigned int flags);
hipError_t hipHostAlloc(void **ptr, size_t size, unsigned int flags);
hipError_t hipHostFree(void *ptr);
hipError_t hipFreeHost(void *ptr);
hipError_t hipMallocManaged(void **ptr, size_t size, unsigned int flags);
hipError_t hipExtMallocWithFlags(void **ptr, size_t size, unsigned int flags);
hipError_t hipMemAdvise(const void *ptr, size_t count, int advice, int device);
hipError_t hipMemcpy(void *dst, const void *src, size_t size, int kind);
hipError_t hipMemset(void *dst, int value, size_t size);
hipError_t hipDeviceSynchronize(void);
hipError_t hipGetLastError(void);
hipError_t hipPeekAtLastError(void);
hipError_t hipRuntimeGetVersion(int *version);
const char *hipGetErrorString(hipError_t error);
hipError_t hipGetProcAddress(const char *symbol, void **pfn, int hipVersion, uint64_t flags, int *status);

/* ---- Allocation entry points beyond hipMalloc (hip_alloc.c) ---- */
typedef void *hipDeviceptr_t;
typedef struct ihipMemPoolHandle_t *hipMemPool_t;
typedef struct hipPitchedPtr { void *ptr; size_t pitch; size_t xsize; size_t ysize; } hipPitchedPtr;
typedef struct hipExtent { size_t width; size_t height; size_t depth; } hipExtent;
typedef struct ihipMemGenericAllocationHandle *hipMemGenericAllocationHandle_t;
typedef enum { hipMemLocationTypeInvalid = 0, hipMemLocationTypeDevice = 1 } hipMemLocationType;
typedef struct hipMemLocation { hipMemLocationType type; int id; } hipMemLocation;
typedef enum { hipMemAllocationTypeInvalid = 0, hipMemAllocationTypePinned = 1 } hipMemAllocationType;
typedef struct hipMemAllocationProp {
  hipMemAllocationType type;
  int requestedHandleType;
  hipMemLocation location;
  void *win32HandleMetaData;
  struct { unsigned char compressionType; unsigned char gpuDirectRDMACapable; unsigned short usage; } allocFlags;
} hipMemAllocationProp;
typedef enum { hipMemAccessFlagsProtNone = 0, hipMemAccessFlagsProtRead = 1, hipMemAccessFlagsProtReadWrite = 3 } hipMemAccessFlags;
typedef struct hipMemAccessDesc { hipMemLocation location; hipMemAccessFlags flags; } hipMemAccessDesc;
#define hipMemAllocationGranularityMinimum 0
#define hipMemAllocationGranularityRecommended 1
#define hipErrorNotFound 500

typedef struct hipChannelFormatDesc { int x, y, z, w; int f; } hipChannelFormatDesc;
/* The leading fields of HIP's struct hipArray (hip_runtime_api.h). */
typedef struct hipArray { void *data; hipChannelFormatDesc desc; unsigned int type, width, height, depth; } hipArray;
typedef hipArray *hipArray_t;
typedef struct hipMemPoolProps {
  hipMemAllocationType allocType;
  int handleTypes;
  hipMemLocation location;
  void *win32SecurityAttributes;
  size_t maxSize;
  unsigned char reserved[56];
} hipMemPoolProps;

hipError_t hipMallocArray(hipArray_t *array, const hipChannelFormatDesc *desc, size_t width, size_t height,
                          unsigned int flags);
hipError_t hipFreeArray(hipArray_t array);
hipError_t hipMemPoolCreate(hipMemPool_t *mem_pool, const hipMemPoolProps *props);
hipError_t hipMemPoolDestroy(hipMemPool_t mem_pool);
hipError_t hipMemGetInfo(size_t *free, size_t *total);
hipError_t hipMallocPitch(void **ptr, size_t *pitch, size_t width, size_t height);
hipError_t hipMemAllocPitch(hipDeviceptr_t *dptr, size_t *pitch, size_t widthInBytes, size_t height,
                            unsigned int elementSizeBytes);
hipError_t hipMalloc3D(hipPitchedPtr *pitchedDevPtr, hipExtent extent);
hipError_t hipMemGetAddressRange(hipDeviceptr_t *pbase, size_t *psize, hipDeviceptr_t dptr);
hipError_t hipMallocAsync(void **dev_ptr, size_t size, hipStream_t stream);
hipError_t hipFreeAsync(void *dev_ptr, hipStream_t stream);
hipError_t hipMallocFromPoolAsync(void **dev_ptr, size_t size, hipMemPool_t mem_pool, hipStream_t stream);
hipError_t hipDeviceGetDefaultMemPool(hipMemPool_t *mem_pool, int device);
hipError_t hipMemPoolTrimTo(hipMemPool_t mem_pool, size_t min_bytes_to_hold);
hipError_t hipMemCreate(hipMemGenericAllocationHandle_t *handle, size_t size, const hipMemAllocationProp *prop,
                        unsigned long long flags);
hipError_t hipMemRelease(hipMemGenericAllocationHandle_t handle);
hipError_t hipMemAddressReserve(void **ptr, size_t size, size_t alignment, void *addr, unsigned long long flags);
hipError_t hipMemAddressFree(void *devPtr, size_t size);
hipError_t hipMemMap(void *ptr, size_t size, size_t offset, hipMemGenericAllocationHandle_t handle,
                     unsigned long long flags);
hipError_t hipMemUnmap(void *ptr, size_t size);
hipError_t hipMemSetAccess(void *ptr, size_t size, const hipMemAccessDesc *desc, size_t count);
hipError_t hipMemGetAllocationGranularity(size_t *granularity, const hipMemAllocationProp *prop, int option);

/* ---- The kernel stand-in ------------------------------------------------
 * A kernel on the current device reads (or writes) `bytes` at base+offset.
 * Returns hipSuccess, or an error after a fault that a system event handler
 * suppressed (hipErrorIllegalAddress), or hipErrorLaunchFailure when the
 * queues are already dead. An unsuppressed fault aborts the process, as
 * ROCr does. */
hipError_t simgpuLaunchRead(const void *base, size_t offset, size_t bytes);
hipError_t simgpuLaunchWrite(void *base, size_t offset, size_t bytes);
/* The same kernel, launched without waiting: a fault is handled on ROCr's
 * event thread while the caller goes on; hipDeviceSynchronize waits for it. */
hipError_t simgpuLaunchReadAsync(const void *base, size_t offset, size_t bytes);
/* Bytes of memory the current device's page tables map from addr on, up to
 * cap (0 when addr itself is unmapped): what an over-read past addr would read. */
size_t simgpuMappedBytes(const void *addr, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
