/*
 * simgpu's libamdhip64.so.6: a stand-in for clr's HIP runtime. Every
 * allocation goes through hsa_amd_memory_pool_allocate@ROCR_1 by a PLT call
 * (as Debian's libamdhip64.so.5 does: readelf -r), choosing the pool as clr
 * (hip_memory.cpp, rocdevice.cpp) does for a discrete GPU without XNACK. HIP
 * calls initialise HSA implicitly.
 * Like clr, the runtime also allocates a buffer of its own (hostcall/signals)
 * from the CPU fine-grained pool through the same PLT call.
 *
 * One source, three builds (scripts/simgpu-build): libamdhip64.so.5, .so.6 and
 * .so.7 with SIMGPU_ROCM_VERSION_DEFAULT 502, 604 or 702. Where the releases
 * differ (FAULT-MODEL.md, "Versions") this file says which source shows it.
 * Every name the real library of that release exports and this file does not
 * define is a generated stub (hipErrorNotSupported, logged as {"stub":true}).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "calllog.h"
#include "simgpu.h"
#include "simgpu_private.h"
#include "hip_internal.h"

#define EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(hipDeviceProp_tR0600) == 1472, "R0600 layout");
_Static_assert(offsetof(hipDeviceProp_tR0600, gcnArchName) == 1160, "R0600 gcnArchName");
_Static_assert(sizeof(hsa_amd_event_t) == 32, "event layout (hsa_ext_amd.h)");


static pthread_once_t once = PTHREAD_ONCE_INIT;
static hipError_t init_error = hipSuccess;
HIDDEN struct device devs[MAX_DEV];
HIDDEN int ndev;
static hsa_agent_t cpu_agent;
HIDDEN hsa_amd_memory_pool_t cpu_fine, cpu_coarse;
static hsa_amd_memory_pool_t cpu_kernarg;
static void *internal_buffer; /* the runtime's own hostcall/signal buffer */
HIDDEN __thread int current_dev;
static __thread hipError_t last_error;
static __thread hipError_t last_command_error; /* 7.x: hipExtGetLastError's */

static hsa_status_t pool_cb(hsa_amd_memory_pool_t pool, void *data) {
  struct device *d = data;
  uint32_t flags = 0;
  if (hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &flags) != HSA_STATUS_SUCCESS)
    return HSA_STATUS_SUCCESS;
  if (d) {
    if (flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED) d->coarse = pool;
    else if (flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED) d->ext_fine = pool;
    else if (flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED) d->fine = pool;
  } else {
    if (flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT) cpu_kernarg = pool;
    else if (flags & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED) cpu_coarse = pool;
    else if (flags == HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED) cpu_fine = pool;
  }
  return HSA_STATUS_SUCCESS;
}

static hsa_status_t agent_cb(hsa_agent_t agent, void *data) {
  (void)data;
  uint32_t type = 0;
  hsa_agent_get_info(agent, HSA_AGENT_INFO_DEVICE, &type);
  if (type == HSA_DEVICE_TYPE_CPU) {
    if (!cpu_agent.handle) {
      cpu_agent = agent;
      hsa_amd_agent_iterate_memory_pools(agent, pool_cb, NULL);
    }
  } else if (type == HSA_DEVICE_TYPE_GPU && ndev < MAX_DEV) {
    struct device *d = &devs[ndev++];
    d->agent = agent;
    hsa_agent_get_info(agent, HSA_AGENT_INFO_NAME, d->name);
    hsa_agent_get_info(agent, HSA_AMD_AGENT_INFO_PRODUCT_NAME, d->product);
    hsa_agent_get_info(agent, HSA_AMD_AGENT_INFO_DRIVER_NODE_ID, &d->node);
    hsa_agent_get_info(agent, HSA_AMD_AGENT_INFO_CHIP_ID, &d->chip_id);
    hsa_amd_agent_iterate_memory_pools(agent, pool_cb, d);
  }
  return HSA_STATUS_SUCCESS;
}

/* clr 7.x: a GPU error does not abort the process but leaves a sticky,
 * process-wide error that every HIP call returns from then on
 * (amd::Device::gpu_error_, IsGPUInError in HIP_INIT_API and HIP_RETURN;
 * callbackQueue aborts only when HIP_SKIP_ABORT_ON_GPU_ERROR (default true)
 * is off or core dumps are enabled (Os::DumpCoreFile: RLIMIT_CORE != 0) —
 * ROCm/rocm-systems projects/clr rocclr/device/rocm/rocdevice.cpp,
 * rocclr/utils/flags.hpp; CHANGELOG "HIP 7.0"). A memory fault becomes
 * hipErrorIllegalAddress (ConvertHSAErrorIntoCLError → CL_INVALID_MEM_OBJECT).
 * How a VM fault reaches clr in 7.x is inferred, not read: Debian's 7.2.4
 * libamdhip64 imports hsa_amd_register_system_event_handler (6.4.3 does not),
 * AMD's hip-tests (unit/errorHandling/hipPageFault.cc) expect a null-pointer
 * kernel to leave hipErrorIllegalAddress with no abort, and PyTorch on ROCm 7
 * raises it as an exception (ROCm/pytorch#3336). So the 7.2 build registers a
 * handler at start-up that records the sticky error and, under the same
 * conditions as callbackQueue, returns SUCCESS so that ROCr does not abort. */
static volatile hipError_t gpu_error; /* 7.x: sticky, process-wide */

static int clr_skips_abort(void) {
  const char *v = getenv("HIP_SKIP_ABORT_ON_GPU_ERROR");
  if (v && *v && !atoi(v)) return 0;
  struct rlimit core;
  return getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_cur == 0;
}

static hsa_status_t clr_fault_handler(const hsa_amd_event_t *ev, void *data) {
  (void)data;
  if (ev->event_type != HSA_AMD_GPU_MEMORY_FAULT_EVENT || !clr_skips_abort()) return HSA_STATUS_ERROR;
  gpu_error = hipErrorIllegalAddress;
  return HSA_STATUS_SUCCESS;
}

static void platform_init(void);
static void runtime_init(void) {
  if (hsa_init() != HSA_STATUS_SUCCESS) { init_error = hipErrorNoDevice; return; }
  hsa_iterate_agents(agent_cb, NULL);
  if (ndev == 0) { init_error = hipErrorNoDevice; return; }
  if (rocm_version() >= 700) hsa_amd_register_system_event_handler(clr_fault_handler, NULL);
  /* clr's own hostcall/signal buffer: fine-grained host memory, allocated
   * through the exported (and so interposable) HSA function. */
  if (!cpu_fine.handle || hsa_amd_memory_pool_allocate(cpu_fine, 4096, 0, &internal_buffer) != HSA_STATUS_SUCCESS)
    init_error = hipErrorSharedObjectInitFailed;
  if (init_error == hipSuccess) platform_init();
}

HIDDEN hipError_t ensure_init(void) {
  pthread_once(&once, runtime_init);
  if (init_error == hipSuccess && gpu_error != hipSuccess) return gpu_error; /* 7.x HIP_INIT_API */
  return init_error;
}

HIDDEN int rocm_version(void) { return simgpu_hsa_rocm_version(); }

/* clr's HIP_RETURN. Up to 6.x it stores every call's result, successes
 * included, so a successful call clears an earlier error (ROCm/clr
 * hipamd/src/hip_internal.hpp, branch rocm-6.2.x and amd-staging of Oct 2024:
 * `hip::tls.last_error_ = ret`). 7.x keeps every result in last_command_error_
 * (what hipExtGetLastError returns) and records into last_error_ only results
 * other than hipSuccess and hipErrorNotReady (ROCm/rocm-systems
 * projects/clr/hipamd/src/hip_internal.hpp, HIP_UPDATE_ERROR_STATE;
 * docs/hip-7-changes.rst). */
HIDDEN hipError_t ret(hipError_t e) {
  if (gpu_error != hipSuccess) e = gpu_error; /* 7.x: IsGPUInError overrides every result */
  if (rocm_version() >= 700) {
    last_command_error = e;
    if (e != hipSuccess && e != hipErrorNotReady) last_error = e;
  } else {
    last_error = e;
  }
  return e;
}

HIDDEN hipError_t pool_alloc(hsa_amd_memory_pool_t pool, size_t size, void **ptr) {
  if (!pool.handle) return hipErrorOutOfMemory; /* an invisible pool's handle is 0 (clr rocdevice.cpp, up to 6.2) */
  void *p = NULL;
  if (hsa_amd_memory_pool_allocate(pool, size, 0, &p) != HSA_STATUS_SUCCESS) return hipErrorOutOfMemory;
  /* Host memory: clr's hostAlloc makes it reachable by every GPU
   * (hsa_amd_agents_allow_access, rocdevice.cpp). */
  if (pool.handle == cpu_fine.handle || pool.handle == cpu_coarse.handle || pool.handle == cpu_kernarg.handle) {
    hsa_agent_t gpus[MAX_DEV];
    for (int i = 0; i < ndev; i++) gpus[i] = devs[i].agent;
    if (ndev) hsa_amd_agents_allow_access((uint32_t)ndev, gpus, NULL, p);
  }
  memobj_add(p, size, pool.handle != cpu_fine.handle && pool.handle != cpu_coarse.handle &&
                        pool.handle != cpu_kernarg.handle);
  *ptr = p;
  return hipSuccess;
}

/* ---- device management ---- */

EXPORT hipError_t hipInit(unsigned int flags) {
  hipError_t e = flags ? hipErrorInvalidValue : ensure_init();
  calllog("hip", "hipInit", e, "\"flags\":%u", flags);
  return ret(e);
}

EXPORT hipError_t hipGetDeviceCount(int *count) {
  hipError_t e = count ? ensure_init() : hipErrorInvalidValue;
  if (count) *count = e == hipSuccess ? ndev : 0;
  calllog("hip", "hipGetDeviceCount", e, "\"count\":%d", count ? *count : -1);
  return ret(e);
}

EXPORT hipError_t hipSetDevice(int device) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && (device < 0 || device >= ndev)) e = hipErrorInvalidDevice;
  if (e == hipSuccess) current_dev = device;
  calllog("hip", "hipSetDevice", e, "\"device\":%d", device);
  return ret(e);
}

EXPORT hipError_t hipGetDevice(int *device) {
  hipError_t e = device ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) *device = current_dev;
  calllog("hip", "hipGetDevice", e, "\"device\":%d", e == hipSuccess ? *device : -1);
  return ret(e);
}

static void arch_name(const struct device *d, char *out, size_t n) {
  /* RDNA1 names carry the xnack feature as clr prints it (ROCR-Runtime isa.cpp). */
  int rdna1 = !strncmp(d->name, "gfx101", 6);
  snprintf(out, n, "%s%s", d->name, rdna1 ? ":xnack-" : "");
}

static hipError_t check_device(int device) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && (device < 0 || device >= ndev)) e = hipErrorInvalidDevice;
  return e;
}

EXPORT hipError_t hipGetDeviceProperties(hipDeviceProp_tR0000 *prop, int device) {
  hipError_t e = prop ? check_device(device) : hipErrorInvalidValue;
  if (e == hipSuccess) {
    const struct device *d = &devs[device];
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "%s", d->product);
    arch_name(d, prop->gcnArchName, sizeof prop->gcnArchName);
    hsa_amd_memory_pool_get_info(d->coarse, HSA_AMD_MEMORY_POOL_INFO_SIZE, &prop->totalGlobalMem);
    prop->warpSize = 32;
    sscanf(d->name, "gfx%2d%1d", &prop->major, &prop->minor);
    prop->managedMemory = 1;
  }
  calllog("hip", "hipGetDeviceProperties", e, "\"device\":%d", device);
  return ret(e);
}

EXPORT hipError_t hipGetDevicePropertiesR0600(hipDeviceProp_tR0600 *prop, int device) {
  hipError_t e = prop ? check_device(device) : hipErrorInvalidValue;
  if (e == hipSuccess) {
    const struct device *d = &devs[device];
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "%s", d->product);
    arch_name(d, prop->gcnArchName, sizeof prop->gcnArchName);
    hsa_amd_memory_pool_get_info(d->coarse, HSA_AMD_MEMORY_POOL_INFO_SIZE, &prop->totalGlobalMem);
    prop->warpSize = 32;
    sscanf(d->name, "gfx%2d%1d", &prop->major, &prop->minor);
  }
  calllog("hip", "hipGetDevicePropertiesR0600", e, "\"device\":%d", device);
  return ret(e);
}

/* ---- memory ---- */

EXPORT_TABLED hipError_t TABLED(hipMalloc)(void **ptr, size_t size) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    *ptr = NULL;
    if (size) e = pool_alloc(devs[current_dev].coarse, size, ptr); /* coarse VRAM (clr hip_memory.cpp) */
  }
  calllog("hip", "hipMalloc", e, "\"size\":%zu,\"ptr\":%s", size, PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

HIDDEN hipError_t free_any(void *ptr) {
  if (!ptr) return hipSuccess;
  void *base = ptr;
  memobj_find(ptr, &base, NULL); /* clr-memobj: an interior pointer frees its whole allocation */
  memobj_remove(base);
  size_t sz = 0;
  if (simgpu_hsa_svm_forget(base, &sz)) { /* managed memory: an mmap'd SVM range */
    munmap(base, sz);
    return hipSuccess;
  }
  return hsa_amd_memory_pool_free(base) == HSA_STATUS_SUCCESS ? hipSuccess : hipErrorInvalidValue;
}

EXPORT_TABLED hipError_t TABLED(hipFree)(void *ptr) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess) e = free_any(ptr);
  calllog("hip", "hipFree", e, "\"ptr\":%s", PTRSTR(ps, ptr));
  return ret(e);
}

static int host_coherent_env(void) {
  const char *v = getenv("HIP_HOST_COHERENT");
  return v && atoi(v) == 1; /* defaults to 0 (clr rocclr/utils/flags.hpp) */
}

/* hipHostMalloc's pool choice (clr hip_memory.cpp ihipHostMalloc). */
static hipError_t host_malloc(void **ptr, size_t size, unsigned flags) {
  if ((flags & hipHostMallocCoherent) && (flags & hipHostMallocNonCoherent)) return hipErrorInvalidValue;
  int coherent = !(flags & hipHostMallocNonCoherent) &&
                 (flags == 0 || (flags & (hipHostMallocCoherent | hipHostMallocMapped | hipHostMallocNumaUser)) ||
                  host_coherent_env());
  *ptr = NULL;
  if (!size) return hipSuccess;
  return pool_alloc(coherent ? cpu_fine : cpu_coarse, size, ptr);
}

EXPORT hipError_t hipHostMalloc(void **ptr, size_t size, unsigned int flags) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) e = host_malloc(ptr, size, flags);
  calllog("hip", "hipHostMalloc", e, "\"size\":%zu,\"flags\":%u,\"ptr\":%s", size, flags,
          PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipHostAlloc(void **ptr, size_t size, unsigned int flags) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    if (rocm_version() < 603) { /* up to 6.2: the device allocator with the raw flags (clr rocm-6.2.2) */
      *ptr = NULL;
      if (size) e = pool_alloc(devs[current_dev].coarse, size, ptr);
    } else if (flags & ~(hipHostMallocPortable | hipHostMallocMapped | hipHostMallocWriteCombined)) {
      e = hipErrorInvalidValue;
    } else {
      e = host_malloc(ptr, size, flags);
    }
  }
  calllog("hip", "hipHostAlloc", e, "\"size\":%zu,\"flags\":%u,\"ptr\":%s", size, flags,
          PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipHostFree(void *ptr) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess) e = free_any(ptr);
  calllog("hip", "hipHostFree", e, "\"ptr\":%s", PTRSTR(ps, ptr));
  return ret(e);
}

EXPORT hipError_t hipFreeHost(void *ptr) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess) e = free_any(ptr);
  calllog("hip", "hipFreeHost", e, "\"ptr\":%s", PTRSTR(ps, ptr));
  return ret(e);
}

EXPORT hipError_t hipMallocManaged(void **ptr, size_t size, unsigned int flags) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess && flags != hipMemAttachGlobal && flags != hipMemAttachHost) e = hipErrorInvalidValue;
  if (e == hipSuccess) {
    *ptr = NULL;
    bool hmm = false;
    hsa_system_get_info(HSA_AMD_SYSTEM_INFO_SVM_SUPPORTED, &hmm);
    if (!size) {
    } else if (!hmm) {
      e = pool_alloc(cpu_coarse, size, ptr); /* pinned host memory without HMM */
    } else {
      void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) e = hipErrorOutOfMemory;
      else {
        /* AGENT_ACCESSIBLE for every GPU; the range stays coherent (KFD default). */
        hsa_amd_svm_attribute_pair_t attrs[MAX_DEV];
        for (int i = 0; i < ndev; i++) attrs[i] = (hsa_amd_svm_attribute_pair_t){HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE, devs[i].agent.handle};
        if (hsa_amd_svm_attributes_set(m, size, attrs, (size_t)ndev) != HSA_STATUS_SUCCESS) {
          munmap(m, size);
          e = hipErrorOutOfMemory;
        } else {
          *ptr = m;
          memobj_add(m, size, 0);
        }
      }
    }
  }
  calllog("hip", "hipMallocManaged", e, "\"size\":%zu,\"flags\":%u,\"ptr\":%s", size, flags,
          PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

/* hipExtMallocWithFlags compares flags with == (clr hip_memory.cpp). */
EXPORT hipError_t hipExtMallocWithFlags(void **ptr, size_t size, unsigned int flags) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    struct device *d = &devs[current_dev];
    int ver = rocm_version();
    *ptr = NULL;
    if (flags == hipDeviceMallocDefault) {
      if (size) e = pool_alloc(d->coarse, size, ptr);
    } else if (flags == hipDeviceMallocFinegrained) {
      hsa_amd_memory_pool_t p = d->fine;
      if (!p.handle && ver >= 603) p = d->coarse; /* 6.3+: silently coarse */
      if (size) e = pool_alloc(p, size, ptr);
    } else if (flags == hipMallocSignalMemory) {
      if (size != 8) e = hipErrorInvalidValue;
      else e = pool_alloc(cpu_fine, size, ptr);
    } else if (flags == hipDeviceMallocUncached) {
      if (ver < 506) e = hipErrorInvalidValue;
      else if (size) e = pool_alloc(d->ext_fine, size, ptr); /* fails where there is none */
    } else if (flags == hipDeviceMallocContiguous && ver >= 602) {
      if (size) e = pool_alloc(d->ext_fine, size, ptr);
    } else {
      e = hipErrorInvalidValue;
    }
  }
  calllog("hip", "hipExtMallocWithFlags", e, "\"size\":%zu,\"flags\":%u,\"ptr\":%s", size, flags,
          PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMemAdvise(const void *ptr, size_t count, int advice, int device) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || !count)) e = hipErrorInvalidValue;
  if (e == hipSuccess && (advice < hipMemAdviseSetReadMostly ||
                          (advice > hipMemAdviseUnsetAccessedBy && advice != hipMemAdviseSetCoarseGrain &&
                           advice != hipMemAdviseUnsetCoarseGrain)))
    e = hipErrorInvalidValue;
  if (e == hipSuccess && (advice == hipMemAdviseSetCoarseGrain || advice == hipMemAdviseUnsetCoarseGrain)) {
    bool hmm = false;
    hsa_system_get_info(HSA_AMD_SYSTEM_INFO_SVM_SUPPORTED, &hmm);
    if (hmm) { /* without HMM: a logged no-op returning success (clr rocdevice.cpp) */
      hsa_amd_svm_attribute_pair_t a = {HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG,
                                        advice == hipMemAdviseSetCoarseGrain ? HSA_AMD_SVM_GLOBAL_FLAG_COARSE_GRAINED
                                                                             : HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED};
      if (hsa_amd_svm_attributes_set((void *)ptr, count, &a, 1) != HSA_STATUS_SUCCESS) e = hipErrorInvalidValue;
    }
  }
  calllog("hip", "hipMemAdvise", e, "\"ptr\":%s,\"count\":%zu,\"advice\":%d,\"device\":%d", PTRSTR(ps, ptr), count,
          advice, device);
  return ret(e);
}

static int stream_ok(hipStream_t s);

/* hipMemcpy and hipMemcpyAsync check and copy alike (clr hip_memory.cpp: both
 * go through ihipMemcpy, the async one on the stream's queue); the simulated
 * device completes every copy at once, so the copy is a host memmove. */
static hipError_t memcpy_impl(void *dst, const void *src, size_t size, int kind) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && size && (!dst || !src)) e = hipErrorInvalidValue;
  if (e == hipSuccess && (kind < hipMemcpyHostToHost || kind > hipMemcpyDefault)) e = hipErrorInvalidValue;
  if (e == hipSuccess && size && (simgpu_hsa_range_state(dst, size) < 0 || simgpu_hsa_range_state(src, size) < 0))
    e = hipErrorInvalidValue;
  if (e == hipSuccess && size) memmove(dst, src, size);
  return e;
}

EXPORT hipError_t hipMemcpy(void *dst, const void *src, size_t size, int kind) {
  char ds[32], ss[32];
  hipError_t e = memcpy_impl(dst, src, size, kind);
  calllog("hip", "hipMemcpy", e, "\"dst\":%s,\"src\":%s,\"size\":%zu,\"kind\":%d", PTRSTR(ds, dst), PTRSTR(ss, src), size,
          kind);
  return ret(e);
}

EXPORT hipError_t hipMemcpyAsync(void *dst, const void *src, size_t size, int kind, hipStream_t stream) {
  char ds[32], ss[32], ts[32];
  hipError_t e = stream_ok(stream) ? memcpy_impl(dst, src, size, kind) : hipErrorInvalidValue;
  calllog("hip", "hipMemcpyAsync", e, "\"dst\":%s,\"src\":%s,\"size\":%zu,\"kind\":%d,\"stream\":%s", PTRSTR(ds, dst),
          PTRSTR(ss, src), size, kind, PTRSTR(ts, stream));
  return ret(e);
}

/* hipMemset and hipMemsetAsync likewise (clr hip_memory.cpp ihipMemset). */
static hipError_t memset_impl(void *dst, int value, size_t size) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && size && simgpu_hsa_range_state(dst, size) != 1) e = hipErrorInvalidValue;
  if (e == hipSuccess && size) memset(dst, value, size);
  return e;
}

EXPORT hipError_t hipMemset(void *dst, int value, size_t size) {
  char ds[32];
  hipError_t e = memset_impl(dst, value, size);
  calllog("hip", "hipMemset", e, "\"dst\":%s,\"value\":%d,\"size\":%zu", PTRSTR(ds, dst), value, size);
  return ret(e);
}

EXPORT hipError_t hipMemsetAsync(void *dst, int value, size_t size, hipStream_t stream) {
  char ds[32], ts[32];
  hipError_t e = stream_ok(stream) ? memset_impl(dst, value, size) : hipErrorInvalidValue;
  calllog("hip", "hipMemsetAsync", e, "\"dst\":%s,\"value\":%d,\"size\":%zu,\"stream\":%s", PTRSTR(ds, dst), value,
          size, PTRSTR(ts, stream));
  return ret(e);
}

EXPORT hipError_t hipDeviceSynchronize(void) {
  hipError_t e = ensure_init();
  if (e == hipSuccess) simgpu_hsa_wait_idle(); /* a kernel that faulted completes only once the event is handled */
  if (e == hipSuccess) mempool_release_freed(); /* clr-mempool: Device::ReleaseFreedMemory */
  if (e == hipSuccess && simgpu_hsa_queues_dead()) e = hipErrorLaunchFailure; /* the queues are gone (KFD evicted them) */
  calllog("hip", "hipDeviceSynchronize", e, " ");
  return ret(e);
}

/* HIP_VERSION of the release modelled: major*10000000 + minor*100000 + patch
 * (hip_version.h). The patch is that of Debian's build of the release (the
 * HIP_VERSION_PATCH of its hip_version.h: 5.2.3 21153, 6.4.3 43484, 7.2.4
 * 53211); an older minor chosen by SIMGPU_ROCM_VERSION reports patch 0. clr
 * returns HIP_VERSION from both hipRuntimeGetVersion and hipDriverGetVersion
 * (ROCm/clr hipamd/src/hip_context.cpp). */
static int hip_version(void) {
  int v = rocm_version(), patch = 0;
  if (v == SIMGPU_ROCM_VERSION_DEFAULT)
    patch = v == 502 ? 21153 : v == 604 ? 43484 : v == 702 ? 53211 : 0;
  return (v / 100) * 10000000 + (v % 100) * 100000 + patch;
}

EXPORT hipError_t hipRuntimeGetVersion(int *version) {
  hipError_t e = version ? hipSuccess : hipErrorInvalidValue;
  if (version) *version = hip_version();
  calllog("hip", "hipRuntimeGetVersion", e, "\"version\":%d", version ? *version : -1);
  return ret(e);
}

EXPORT hipError_t hipDriverGetVersion(int *version) {
  hipError_t e = version ? hipSuccess : hipErrorInvalidValue;
  if (version) *version = hip_version();
  calllog("hip", "hipDriverGetVersion", e, "\"version\":%d", version ? *version : -1);
  return ret(e);
}

/* clr: returns last_error_ and stores it again through HIP_RETURN. */
EXPORT hipError_t hipPeekAtLastError(void) {
  hipError_t e = last_error;
  calllog("hip", "hipPeekAtLastError", e, " ");
  return ret(e);
}

/* clr: returns last_error_ and resets it (hip_error.cpp), in every release;
 * what last_error_ holds differs (see ret()). */
EXPORT hipError_t hipGetLastError(void) {
  hipError_t e = last_error;
  last_error = hipSuccess;
  calllog("hip", "hipGetLastError", e, " ");
  return e;
}

/* Exported from 6.0 (hip_6.0). 6.x: the same as hipGetLastError (ROCm/clr
 * hipamd/src/hip_error.cpp); 7.x: the result of the last call, whatever it was
 * (last_command_error_, ROCm/rocm-systems projects/clr/hipamd/src/hip_error.cpp). */
EXPORT hipError_t hipExtGetLastError(void) {
  hipError_t e;
  if (rocm_version() >= 700) {
    e = last_command_error;
    last_command_error = hipSuccess;
  } else {
    e = last_error;
    last_error = hipSuccess;
  }
  calllog("hip", "hipExtGetLastError", e, " ");
  return e;
}

/* The names clr's ihipGetErrorName gives (hip_error.cpp), for the codes the
 * simulation returns; others are "hipErrorUnknown" as there. */
EXPORT_TABLED const char *TABLED(hipGetErrorName)(hipError_t error) {
  const char *s;
  switch (error) {
  case hipSuccess: s = "hipSuccess"; break;
  case hipErrorInvalidValue: s = "hipErrorInvalidValue"; break;
  case hipErrorOutOfMemory: s = "hipErrorOutOfMemory"; break;
  case hipErrorNotInitialized: s = "hipErrorNotInitialized"; break;
  case hipErrorInvalidSymbol: s = "hipErrorInvalidSymbol"; break;
  case hipErrorInvalidDeviceFunction: s = "hipErrorInvalidDeviceFunction"; break;
  case hipErrorNoDevice: s = "hipErrorNoDevice"; break;
  case hipErrorInvalidDevice: s = "hipErrorInvalidDevice"; break;
  case hipErrorInvalidImage: s = "hipErrorInvalidImage"; break;
  case hipErrorNoBinaryForGpu: s = "hipErrorNoBinaryForGpu"; break;
  case hipErrorSharedObjectInitFailed: s = "hipErrorSharedObjectInitFailed"; break;
  case hipErrorInvalidHandle: s = "hipErrorInvalidHandle"; break;
  case hipErrorNotReady: s = "hipErrorNotReady"; break;
  case hipErrorIllegalAddress: s = "hipErrorIllegalAddress"; break;
  case hipErrorLaunchFailure: s = "hipErrorLaunchFailure"; break;
  case hipErrorNotSupported: s = "hipErrorNotSupported"; break;
  default: s = "hipErrorUnknown"; break;
  }
  calllog("hip", "hipGetErrorName", 0, "\"error\":%d", error);
  return s;
}

EXPORT const char *hipGetErrorString(hipError_t error) {
  const char *s;
  switch (error) {
  case hipSuccess: s = "no error"; break;
  case hipErrorInvalidValue: s = "invalid argument"; break;
  case hipErrorOutOfMemory: s = "out of memory"; break;
  case hipErrorNotInitialized: s = "initialization error"; break;
  case hipErrorNoDevice: s = "no ROCm-capable device is detected"; break;
  case hipErrorInvalidDevice: s = "invalid device ordinal"; break;
  case hipErrorSharedObjectInitFailed: s = "shared object initialization failed"; break;
  case hipErrorIllegalAddress: s = "an illegal memory access was encountered"; break;
  case hipErrorLaunchFailure: s = "unspecified launch failure"; break;
  case hipErrorNotSupported: s = "operation not supported"; break;
  case hipErrorInvalidSymbol: s = "invalid device symbol"; break;
  case hipErrorInvalidDeviceFunction: s = "invalid device function"; break;
  case hipErrorInvalidImage: s = "device kernel image is invalid"; break;
  case hipErrorNoBinaryForGpu: s = "no kernel image is available for execution on the device"; break;
  case hipErrorInvalidHandle: s = "invalid resource handle"; break;
  case hipErrorNotReady: s = "device not ready"; break;
  default: s = "unknown error"; break;
  }
  calllog("hip", "hipGetErrorString", 0, "\"error\":%d", error);
  return s;
}

/* Opens "libamdhip64.so" by name and looks the symbol up on that handle,
 * which bypasses preloaded definitions (ROCm/clr hipamd/src/hip_platform.cpp,
 * PlatformState::getDynamicLibraryHandle). The same name in the 7.2 build:
 * Debian's 7.2.4 libamdhip64.so.7 holds the string "libamdhip64.so" and no
 * "libamdhip64.so." prefix to append a major to (tests/simgpu_versions.rs reads
 * it); the "libamdhip64.so." + HIP_VERSION_MAJOR of later rocm-systems sources
 * is not in that release. */
EXPORT hipError_t hipGetProcAddress(const char *symbol, void **pfn, int hipVersion, uint64_t flags, int *status) {
  char ps[32];
  hipError_t e = hipSuccess;
  void *fn = NULL;
  if (!symbol || !pfn) e = hipErrorInvalidValue;
  else {
    void *h = dlopen("libamdhip64.so", RTLD_LAZY);
    if (!h) e = hipErrorInvalidValue;
    else {
      const char *name = symbol;
      if (hipVersion >= 600 && !strcmp(symbol, "hipGetDeviceProperties")) name = "hipGetDevicePropertiesR0600";
      if (hipVersion >= 600 && !strcmp(symbol, "hipChooseDevice")) name = "hipChooseDeviceR0600";
      fn = dlsym(h, name);
      if (!fn) e = hipErrorInvalidValue; /* status says SYMBOL_NOT_FOUND */
    }
    *pfn = fn;
  }
  if (status) *status = fn ? HIP_GET_PROC_ADDRESS_SUCCESS : HIP_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  calllog("hip", "hipGetProcAddress", e, "\"symbol\":\"%.64s\",\"version\":%d,\"flags\":%lu,\"pfn\":%s",
          symbol ? symbol : "", hipVersion, (unsigned long)flags, PTRSTR(ps, fn));
  return ret(e);
}

/* ---- the kernel stand-in ---- */

static hipError_t launch(const void *base, size_t offset, size_t bytes, int write) {
  hipError_t e = ensure_init();
  if (e != hipSuccess) return e;
  if (simgpu_hsa_queues_dead()) return hipErrorLaunchFailure;
  /* internal-coherence: the runtime's own buffer must be fine-grained, or
   * completion signals are never seen and every launch fails. */
  if ((simgpu_fault_rules() & RULE_INTERNAL_COHERENCE) &&
      !(simgpu_hsa_alloc_flags(internal_buffer) & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED))
    return hipErrorLaunchFailure;
  switch (simgpu_hsa_launch(devs[current_dev].agent, (const char *)base + offset, bytes, write)) {
  case SIMGPU_LAUNCH_OK: return hipSuccess;
  case SIMGPU_LAUNCH_FAULTED: return hipErrorIllegalAddress;
  case SIMGPU_LAUNCH_DEAD: return hipErrorLaunchFailure;
  case SIMGPU_LAUNCH_SKIPPED_UNMAPPED: return hipSuccess;
  default: return hipErrorInvalidValue;
  }
}

EXPORT hipError_t simgpuLaunchRead(const void *base, size_t offset, size_t bytes) {
  char ps[32];
  hipError_t e = launch(base, offset, bytes, 0);
  calllog("hip", "simgpuLaunchRead", e, "\"base\":%s,\"offset\":%zu,\"bytes\":%zu", PTRSTR(ps, base), offset, bytes);
  return ret(e);
}

EXPORT hipError_t simgpuLaunchReadAsync(const void *base, size_t offset, size_t bytes) {
  char ps[32];
  hipError_t e = launch(base, offset, bytes, SIMGPU_LAUNCH_NOWAIT);
  if (e == hipErrorIllegalAddress) e = hipSuccess; /* the launch itself succeeded; the fault comes later */
  calllog("hip", "simgpuLaunchReadAsync", e, "\"base\":%s,\"offset\":%zu,\"bytes\":%zu", PTRSTR(ps, base), offset, bytes);
  return ret(e);
}

EXPORT hipError_t simgpuLaunchWrite(void *base, size_t offset, size_t bytes) {
  char ps[32];
  hipError_t e = launch(base, offset, bytes, 1);
  calllog("hip", "simgpuLaunchWrite", e, "\"base\":%s,\"offset\":%zu,\"bytes\":%zu", PTRSTR(ps, base), offset, bytes);
  return ret(e);
}

/* ---- streams and events (minimal: every operation completes at once) ----
 * Work is synchronous on the simulated device, so a stream only has to exist
 * and an event only has to remember when it was recorded. */

#define STREAM_MAGIC 0x5354524du
#define EVENT_MAGIC 0x4556544eu
struct simgpu_stream { uint32_t magic; int device; unsigned flags; };
struct simgpu_event { uint32_t magic; unsigned flags; int recorded; double ms; };

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
/* NULL is the default stream. */
static int stream_ok(hipStream_t s) { return !s || s->magic == STREAM_MAGIC; }
static int event_ok(hipEvent_t e) { return e && e->magic == EVENT_MAGIC; }

static hipError_t stream_create(hipStream_t *stream, unsigned flags) {
  hipError_t e = stream ? ensure_init() : hipErrorInvalidValue;
  if (e != hipSuccess) return e;
  struct simgpu_stream *s = calloc(1, sizeof *s);
  if (!s) return hipErrorOutOfMemory;
  *s = (struct simgpu_stream){STREAM_MAGIC, current_dev, flags};
  *stream = s;
  return hipSuccess;
}

EXPORT hipError_t hipStreamCreate(hipStream_t *stream) {
  char ps[32];
  hipError_t e = stream_create(stream, 0);
  calllog("hip", "hipStreamCreate", e, "\"stream\":%s", PTRSTR(ps, e == hipSuccess ? *stream : NULL));
  return ret(e);
}

EXPORT hipError_t hipStreamCreateWithFlags(hipStream_t *stream, unsigned int flags) {
  char ps[32];
  hipError_t e = stream_create(stream, flags);
  calllog("hip", "hipStreamCreateWithFlags", e, "\"flags\":%u,\"stream\":%s", flags,
          PTRSTR(ps, e == hipSuccess ? *stream : NULL));
  return ret(e);
}

EXPORT hipError_t hipStreamDestroy(hipStream_t stream) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!stream || !stream_ok(stream))) e = hipErrorInvalidHandle;
  PTRSTR(ps, stream);
  if (e == hipSuccess) {
    stream->magic = 0;
    free(stream);
  }
  calllog("hip", "hipStreamDestroy", e, "\"stream\":%s", ps);
  return ret(e);
}

EXPORT hipError_t hipStreamSynchronize(hipStream_t stream) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !stream_ok(stream)) e = hipErrorInvalidHandle;
  if (e == hipSuccess && simgpu_hsa_queues_dead()) e = hipErrorLaunchFailure; /* as hipDeviceSynchronize */
  calllog("hip", "hipStreamSynchronize", e, "\"stream\":%s", PTRSTR(ps, stream));
  return ret(e);
}

EXPORT hipError_t hipStreamQuery(hipStream_t stream) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !stream_ok(stream)) e = hipErrorInvalidHandle;
  calllog("hip", "hipStreamQuery", e, "\"stream\":%s", PTRSTR(ps, stream));
  return ret(e);
}

static hipError_t event_create(hipEvent_t *event, unsigned flags) {
  hipError_t e = event ? ensure_init() : hipErrorInvalidValue;
  if (e != hipSuccess) return e;
  struct simgpu_event *ev = calloc(1, sizeof *ev);
  if (!ev) return hipErrorOutOfMemory;
  *ev = (struct simgpu_event){EVENT_MAGIC, flags, 0, 0};
  *event = ev;
  return hipSuccess;
}

EXPORT hipError_t hipEventCreate(hipEvent_t *event) {
  char ps[32];
  hipError_t e = event_create(event, 0);
  calllog("hip", "hipEventCreate", e, "\"event\":%s", PTRSTR(ps, e == hipSuccess ? *event : NULL));
  return ret(e);
}

EXPORT hipError_t hipEventCreateWithFlags(hipEvent_t *event, unsigned flags) {
  char ps[32];
  hipError_t e = event_create(event, flags);
  calllog("hip", "hipEventCreateWithFlags", e, "\"flags\":%u,\"event\":%s", flags,
          PTRSTR(ps, e == hipSuccess ? *event : NULL));
  return ret(e);
}

EXPORT hipError_t hipEventRecord(hipEvent_t event, hipStream_t stream) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!event_ok(event) || !stream_ok(stream))) e = hipErrorInvalidHandle;
  if (e == hipSuccess) {
    event->recorded = 1;
    event->ms = now_ms();
  }
  calllog("hip", "hipEventRecord", e, "\"event\":%s", PTRSTR(ps, event));
  return ret(e);
}

EXPORT hipError_t hipEventSynchronize(hipEvent_t event) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !event_ok(event)) e = hipErrorInvalidHandle;
  calllog("hip", "hipEventSynchronize", e, "\"event\":%s", PTRSTR(ps, event));
  return ret(e);
}

EXPORT hipError_t hipEventQuery(hipEvent_t event) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !event_ok(event)) e = hipErrorInvalidHandle;
  calllog("hip", "hipEventQuery", e, "\"event\":%s", PTRSTR(ps, event));
  return ret(e);
}

#define hipEventDisableTiming 0x2u
EXPORT hipError_t hipEventElapsedTime(float *ms, hipEvent_t start, hipEvent_t stop) {
  hipError_t e = ms ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess && (!event_ok(start) || !event_ok(stop))) e = hipErrorInvalidHandle;
  /* CUDA/HIP: a timing-disabled or never-recorded event cannot be timed. */
  else if (e == hipSuccess && ((start->flags | stop->flags) & hipEventDisableTiming)) e = hipErrorInvalidHandle;
  else if (e == hipSuccess && (!start->recorded || !stop->recorded)) e = hipErrorNotReady;
  if (e == hipSuccess) *ms = (float)(stop->ms - start->ms);
  calllog("hip", "hipEventElapsedTime", e, "\"ms\":%.3f", e == hipSuccess ? (double)*ms : 0.0);
  return ret(e);
}

EXPORT hipError_t hipEventDestroy(hipEvent_t event) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !event_ok(event)) e = hipErrorInvalidHandle;
  PTRSTR(ps, event);
  if (e == hipSuccess) {
    event->magic = 0;
    free(event);
  }
  calllog("hip", "hipEventDestroy", e, "\"event\":%s", ps);
  return ret(e);
}

/* ---- device attributes ---- */

EXPORT hipError_t hipDeviceGetAttribute(int *value, int attr, int device) {
  hipError_t e = value ? check_device(device) : hipErrorInvalidValue;
  if (e == hipSuccess) {
    const struct device *d = &devs[device];
    int major = 0, minor = 0;
    sscanf(d->name, "gfx%2d%1d", &major, &minor);
    size_t mem = 0;
    switch (attr) {
    case hipDeviceAttributeMaxThreadsPerBlock: *value = 1024; break;
    case hipDeviceAttributeWarpSize: *value = 32; break; /* wave32 on RDNA */
    case hipDeviceAttributeMultiprocessorCount: *value = 0; break; /* not modelled (as the properties) */
    case hipDeviceAttributeComputeCapabilityMajor: *value = major; break;
    case hipDeviceAttributeComputeCapabilityMinor: *value = minor; break;
    case hipDeviceAttributeManagedMemory: *value = 1; break;
    case hipDeviceAttributeIntegrated: *value = 0; break;
    case hipDeviceAttributePciDeviceId: *value = (int)d->chip_id; break;
    case hipDeviceAttributeClockRate: *value = 0; break;
    case hipDeviceAttributeTotalGlobalMem:
      hsa_amd_memory_pool_get_info(d->coarse, HSA_AMD_MEMORY_POOL_INFO_SIZE, &mem);
      *value = mem > 0x7fffffff ? 0x7fffffff : (int)mem;
      break;
    case hipDeviceAttributeVirtualMemoryManagementSupported:
      if (rocm_version() < 600) { e = hipErrorInvalidValue; break; } /* not in the 5.x enum */
      {
        /* clr asks ROCr (rocclr/device/rocm/rocdevice.cpp: hsa_system_get_info(
         * HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED)); a failed query means false. */
        bool vmm = false;
        if (hsa_system_get_info(HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED, &vmm) != HSA_STATUS_SUCCESS) vmm = false;
        *value = vmm;
      }
      break;
    default: e = hipErrorInvalidValue; break;
    }
  }
  calllog("hip", "hipDeviceGetAttribute", e, "\"attr\":%d,\"device\":%d,\"value\":%d", attr, device,
          e == hipSuccess ? *value : -1);
  return ret(e);
}

/* ---- code objects ----
 * The simulated device executes no GPU code. Registration works as in a
 * hipcc-built program, and fat binaries are digested at start-up as clr does
 * (below: in 5.x a bundle with no code object for a GPU aborts); the launch of
 * a registered kernel fails as clr fails when the fat binary has
 * no code object for the device: hipErrorNoBinaryForGpu (ROCm/clr
 * hipamd/src/hip_platform.cpp ihipLaunchKernel, hip_code_object.cpp "Unable to
 * find code object for all current devices"); an unregistered host function:
 * hipErrorInvalidDeviceFunction (the same ihipLaunchKernel). */

/* A library such as rocSPARSE registers thousands of kernels: the table grows. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct func { const void *host; void **module; char name[96]; } *funcs;
static int nfuncs, cap_funcs;

/* The handle __hipRegisterFatBinary returns (a void **, as clang's stub expects). */
struct fatbin { const void *wrapper; struct fatbin *next; };
static struct fatbin *fatbins; /* every registered one, under reg_lock */
static int platform_ready;     /* PlatformState::init has run */

/* ---- static code objects at start-up (clr's PlatformState::init) ----
 * hip::init ends with PlatformState::init, which digests every fat binary
 * registered so far, and a fat binary registered later is digested at once
 * (StatCO::addFatBinary with `initialized`). Digesting extracts, from the
 * clang offload bundle, a code object for every device (ExtractFatBinary(g_devices));
 * a bundle entry fits a device when its target id names the agent's
 * processor and any feature it sets (sramecc, xnack) has the agent's value
 * (isCodeObjectCompatibleWithDevice; entry ids `hipv4-<triple>-<target id>`,
 * getTripleTargetID). In 5.x a bundle with no code object for some device is
 * fatal: `guarantee(false, "hipErrorNoBinaryForGpu: Unable to find code object
 * for all current devices!")`, i.e. that line on stderr and abort()
 * (ROCm/hipamd src/hip_platform.cpp PlatformState::init, src/hip_code_object.cpp
 * extractCodeObjectFromFatBinary, src/hip_fatbin.cpp ExtractFatBinary, tag
 * rocm-5.2.3; ROCm/ROCclr utils/debug.hpp guarantee, utils/debug.cpp
 * report_fatal, rocm-5.2.3). From clr rocm-5.5.0 on the guarantee is gone: the
 * miss is only logged (at AMD_LOG_LEVEL) and the device gets no code object, so
 * a launch fails with hipErrorNoBinaryForGpu (ROCm/clr hipamd/src/hip_fatbin.cpp
 * "still extract available images to those devices owning them", rocm-6.2.2 and
 * amd-staging). Without a GPU g_devices is empty and nothing is digested. */
#define HIP_FAT_MAGIC 0x48495046u /* __hipFatMAGIC2 */

static uint64_t le64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Splits a target id `gfxNNN[:sramecc±][:xnack±]` (getTargetIDValue). */
static int target_id(const char *id, char *proc, size_t n, char *sramecc, char *xnack) {
  size_t len = strcspn(id, ":");
  if (len >= n) return 0;
  memcpy(proc, id, len);
  proc[len] = 0;
  const char *f = id + len;
  *sramecc = *xnack = ' ';
  if (!strncmp(f, ":sramecc", 8)) { *sramecc = f[8]; f += 9; }
  if (!strncmp(f, ":xnack", 6)) { *xnack = f[6]; f += 7; }
  if ((*sramecc != ' ' && *sramecc != '+' && *sramecc != '-') || (*xnack != ' ' && *xnack != '+' && *xnack != '-'))
    return 0;
  return *f == 0;
}

/* isCodeObjectCompatibleWithDevice on two `amdgcn-amd-amdhsa--<target id>` strings. */
static int code_object_fits(const char *co, const char *agent) {
  static const char triple[] = "amdgcn-amd-amdhsa--";
  if (!strcmp(co, agent)) return 1;
  if (strncmp(co, triple, sizeof triple - 1) || strncmp(agent, triple, sizeof triple - 1)) return 0;
  char cp[64], ap[64], cs, cx, as, ax;
  if (!target_id(co + sizeof triple - 1, cp, sizeof cp, &cs, &cx) ||
      !target_id(agent + sizeof triple - 1, ap, sizeof ap, &as, &ax))
    return 0;
  return !strcmp(cp, ap) && (cs == ' ' || cs == as) && (cx == ' ' || cx == ax);
}

static hsa_status_t isa_name_cb(hsa_isa_t isa, void *out) {
  return hsa_isa_get_info_alt(isa, HSA_ISA_INFO_NAME, out) == HSA_STATUS_SUCCESS ? HSA_STATUS_INFO_BREAK
                                                                                  : HSA_STATUS_SUCCESS;
}

/* Does the bundle hold a code object for the device's ISA? */
static int bundle_fits(const unsigned char *b, const char *isa) {
  uint64_t n = le64(b + 24);
  const unsigned char *e = b + 32;
  for (uint64_t i = 0; i < n && i < 4096; i++) {
    uint64_t idlen = le64(e + 16);
    char id[160] = {0};
    if (idlen < sizeof id) memcpy(id, e + 24, idlen);
    e += 24 + idlen;
    /* code object v4+: the entry id is `hipv4-<triple target id>`; older
     * `hip-` entries name the target in the ELF and do not occur in 5.x builds. */
    if (!strncmp(id, "hipv4-", 6) && code_object_fits(id + 6, isa)) return 1;
  }
  return 0;
}

static void digest_fat_binary(const struct fatbin *f) {
  if (rocm_version() >= 600) return; /* logged only, see above */
  const struct { uint32_t magic, version; const unsigned char *binary; } *w = f->wrapper;
  if (!w || w->magic != HIP_FAT_MAGIC || w->version != 1 || !w->binary) return; /* not registered by clr */
  if (memcmp(w->binary, "__CLANG_OFFLOAD_BUNDLE__", 24)) return; /* a bare code object: used as is */
  for (int d = 0; d < ndev; d++) {
    char isa[96] = {0};
    hsa_agent_iterate_isas(devs[d].agent, isa_name_cb, isa);
    if (!bundle_fits(w->binary, isa)) {
      fprintf(stderr, "hipErrorNoBinaryForGpu: Unable to find code object for all current devices!\n");
      abort();
    }
  }
}

static void platform_init(void) {
  pthread_mutex_lock(&reg_lock);
  platform_ready = 1;
  for (struct fatbin *f = fatbins; f; f = f->next) digest_fat_binary(f);
  pthread_mutex_unlock(&reg_lock);
}

EXPORT void **__hipRegisterFatBinary(const void *wrapper) {
  char ps[32];
  struct fatbin *f = calloc(1, sizeof *f);
  if (f) {
    f->wrapper = wrapper;
    pthread_mutex_lock(&reg_lock);
    f->next = fatbins;
    fatbins = f;
    if (platform_ready) digest_fat_binary(f);
    pthread_mutex_unlock(&reg_lock);
  }
  calllog("hip", "__hipRegisterFatBinary", 0, "\"wrapper\":%s", PTRSTR(ps, wrapper));
  return (void **)f;
}

EXPORT void __hipRegisterFunction(void **module, const void *host, char *device_fn, const char *device_name,
                                  unsigned thread_limit, void *tid, void *bid, void *block, void *grid, int *wsize) {
  (void)device_fn; (void)thread_limit; (void)tid; (void)bid; (void)block; (void)grid; (void)wsize;
  char ps[32];
  pthread_mutex_lock(&reg_lock);
  if (nfuncs == cap_funcs) {
    int cap = cap_funcs ? 2 * cap_funcs : 256;
    struct func *grown = realloc(funcs, (size_t)cap * sizeof *funcs);
    if (grown) {
      funcs = grown;
      cap_funcs = cap;
    }
  }
  if (nfuncs < cap_funcs) {
    funcs[nfuncs].host = host;
    funcs[nfuncs].module = module;
    snprintf(funcs[nfuncs].name, sizeof funcs[nfuncs].name, "%s", device_name ? device_name : "");
    nfuncs++;
  }
  pthread_mutex_unlock(&reg_lock);
  calllog("hip", "__hipRegisterFunction", 0, "\"host\":%s,\"name\":\"%.64s\"", PTRSTR(ps, host),
          device_name ? device_name : "");
}

EXPORT void __hipRegisterVar(void **module, char *host_var, char *device_addr, const char *name, int ext, size_t size,
                             int constant, int global) {
  (void)module; (void)device_addr; (void)ext; (void)constant; (void)global;
  char ps[32];
  calllog("hip", "__hipRegisterVar", 0, "\"var\":%s,\"name\":\"%.64s\",\"size\":%zu", PTRSTR(ps, host_var),
          name ? name : "", size);
}

EXPORT void __hipUnregisterFatBinary(void **module) {
  char ps[32];
  pthread_mutex_lock(&reg_lock);
  for (int i = 0; i < nfuncs;)
    if (funcs[i].module == module) funcs[i] = funcs[--nfuncs];
    else i++;
  for (struct fatbin **f = &fatbins; *f; f = &(*f)->next)
    if ((void **)*f == module) {
      *f = (*f)->next;
      break;
    }
  pthread_mutex_unlock(&reg_lock);
  PTRSTR(ps, module);
  free(module);
  calllog("hip", "__hipUnregisterFatBinary", 0, "\"module\":%s", ps);
}

/* hipcc's <<<>>> lowering: push the configuration, the stub pops it and calls hipLaunchKernel. */
static __thread struct { dim3 grid, block; size_t shmem; hipStream_t stream; int set; } call_config;

EXPORT hipError_t __hipPushCallConfiguration(dim3 grid, dim3 block, size_t shmem, hipStream_t stream) {
  call_config.grid = grid;
  call_config.block = block;
  call_config.shmem = shmem;
  call_config.stream = stream;
  call_config.set = 1;
  calllog("hip", "__hipPushCallConfiguration", 0, "\"shmem\":%zu", shmem);
  return hipSuccess;
}

EXPORT hipError_t __hipPopCallConfiguration(dim3 *grid, dim3 *block, size_t *shmem, hipStream_t *stream) {
  hipError_t e = call_config.set ? hipSuccess : hipErrorInvalidValue;
  if (call_config.set) {
    if (grid) *grid = call_config.grid;
    if (block) *block = call_config.block;
    if (shmem) *shmem = call_config.shmem;
    if (stream) *stream = call_config.stream;
    call_config.set = 0;
  }
  calllog("hip", "__hipPopCallConfiguration", e, " ");
  return e;
}

EXPORT hipError_t hipLaunchKernel(const void *host, dim3 grid, dim3 block, void **args, size_t shmem,
                                  hipStream_t stream) {
  (void)args;
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !stream_ok(stream)) e = hipErrorInvalidValue;
  if (e == hipSuccess) {
    int known = 0;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < nfuncs && !known; i++) known = funcs[i].host == host;
    pthread_mutex_unlock(&reg_lock);
    e = known ? hipErrorNoBinaryForGpu : hipErrorInvalidDeviceFunction;
  }
  calllog("hip", "hipLaunchKernel", e, "\"host\":%s,\"grid\":[%u,%u,%u],\"block\":[%u,%u,%u],\"shmem\":%zu",
          PTRSTR(ps, host), grid.x, grid.y, grid.z, block.x, block.y, block.z, shmem);
  return ret(e);
}

/* Module API. The device executes no code object; an image loads only when
 * it holds a code object for the device (bundle entry id or ELF e_flags
 * target = the agent's name, i.e. after HSA_OVERRIDE_GFX_VERSION, as clr
 * picks the code object of the ISA the agent reports) AND that code object
 * holds the probe kernels of `rocm-fix validate` (src/command/probes/probes.hip),
 * recognised by their names in its symbol string table. Launching one of
 * them performs its declared reads and writes through the simulated kernel
 * (FAULT-MODEL.md, "Probe kernels": a convenience of the simulator, not an
 * execution of the code object). Any other ELF code object or clang offload
 * bundle: hipErrorNoBinaryForGpu, as the fat binary path; anything else is
 * not a code object: hipErrorInvalidImage (clr's answer to an image comgr
 * cannot read). hipModuleGetFunction on a module that never loaded (NULL):
 * hipErrorInvalidResourceHandle (hip_module.cpp), and so
 * hipModuleLaunchKernel of a NULL function; a name the module lacks:
 * hipErrorNotFound (hip_module.cpp, "Cannot find the function"). */

#define MODULE_MAGIC 0x4d4f444cu
#define FUNCTION_MAGIC 0x46554e43u
enum { PROBE_READ, PROBE_WRITE, PROBE_SIGNAL, NPROBES };
static const char *const probe_names[NPROBES] = {"rocm_fix_probe_read", "rocm_fix_probe_write",
                                                 "rocm_fix_probe_signal"};
struct simgpu_function { uint32_t magic; int probe; };
struct simgpu_module { uint32_t magic; struct simgpu_function fn[NPROBES]; int has[NPROBES]; };

/* EF_AMDGPU_MACH of the RDNA targets (LLVM AMDGPUUsage, "AMDGPU ELF Header"). */
static const struct { unsigned mach; const char *name; } machs[] = {
  {0x33, "gfx1010"}, {0x34, "gfx1011"}, {0x35, "gfx1012"}, {0x42, "gfx1013"}, {0x36, "gfx1030"},
  {0x37, "gfx1031"}, {0x38, "gfx1032"}, {0x39, "gfx1033"}, {0x3e, "gfx1034"}, {0x3d, "gfx1035"},
  {0x45, "gfx1036"}, {0x41, "gfx1100"}, {0x46, "gfx1101"}, {0x47, "gfx1102"}, {0x44, "gfx1103"},
};


/* The size of an ELF64 image from its section header table (it is last in
 * what lld writes); 0 if it is not an ELF64 image. */
static size_t elf_size(const unsigned char *p) {
  if (memcmp(p, "\177ELF\2", 5)) return 0;
  uint16_t shentsize, shnum;
  memcpy(&shentsize, p + 0x3a, 2);
  memcpy(&shnum, p + 0x3c, 2);
  return (size_t)le64(p + 0x28) + (size_t)shentsize * shnum;
}

/* Does the ELF code object [p, p+n) target `gfx` and which probes does it name? */
static int elf_probes(const unsigned char *p, size_t n, const char *gfx, int has[NPROBES]) {
  if (n < 64 || memcmp(p, "\177ELF\2", 5)) return 0;
  uint16_t machine;
  uint32_t flags;
  memcpy(&machine, p + 18, 2);
  memcpy(&flags, p + 0x30, 4);
  if (machine != 224) return 0; /* EM_AMDGPU */
  const char *target = NULL;
  for (size_t i = 0; i < sizeof machs / sizeof machs[0]; i++)
    if (machs[i].mach == (flags & 0xffu)) target = machs[i].name;
  if (!target || strcmp(target, gfx)) return 0;
  int any = 0;
  for (int k = 0; k < NPROBES; k++) {
    size_t len = strlen(probe_names[k]) + 1; /* with its NUL: the string table's entry */
    has[k] = memmem(p, n, probe_names[k], len) != NULL;
    any |= has[k];
  }
  return any;
}

/* Which probes the image holds for `gfx`: a clang offload bundle's entry
 * `…amdgcn-amd-amdhsa--<gfx>[:features]`, or a bare ELF code object. */
static int image_probes(const unsigned char *p, const char *gfx, int has[NPROBES]) {
  if (!memcmp(p, "__CLANG_OFFLOAD_BUNDLE__", 24)) {
    uint64_t n = le64(p + 24);
    const unsigned char *e = p + 32;
    for (uint64_t i = 0; i < n && i < 1024; i++) {
      uint64_t off = le64(e), size = le64(e + 8), idlen = le64(e + 16);
      const char *id = (const char *)e + 24;
      e += 24 + idlen;
      const char *t = memmem(id, idlen, "amdgcn-amd-amdhsa--", 19);
      if (!t) continue;
      t += 19;
      size_t tl = strlen(gfx), rest = idlen - (size_t)(t - id);
      if (rest < tl || memcmp(t, gfx, tl) || (rest > tl && t[tl] != ':')) continue;
      return elf_probes(p + off, size, gfx, has);
    }
    return 0;
  }
  return elf_probes(p, elf_size(p), gfx, has);
}

EXPORT hipError_t hipModuleLoadData(hipModule_t *module, const void *image) {
  char ps[32];
  hipError_t e = module && image ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    *module = NULL;
    const unsigned char *p = image;
    int has[NPROBES] = {0};
    if (memcmp(p, "\177ELF", 4) && memcmp(p, "__CLANG_OFFLOAD_BUNDLE__", 24)) e = hipErrorInvalidImage;
    else if (!image_probes(p, devs[current_dev].name, has)) e = hipErrorNoBinaryForGpu;
    else {
      struct simgpu_module *m = calloc(1, sizeof *m);
      if (!m) e = hipErrorOutOfMemory;
      else {
        m->magic = MODULE_MAGIC;
        for (int k = 0; k < NPROBES; k++) {
          m->has[k] = has[k];
          m->fn[k].magic = FUNCTION_MAGIC;
          m->fn[k].probe = k;
        }
        *module = m;
      }
    }
  }
  calllog("hip", "hipModuleLoadData", e, "\"image\":%s", PTRSTR(ps, image));
  return ret(e);
}

EXPORT hipError_t hipModuleUnload(hipModule_t module) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!module || module->magic != MODULE_MAGIC)) e = hipErrorInvalidHandle;
  if (e == hipSuccess) { module->magic = 0; free(module); }
  calllog("hip", "hipModuleUnload", e, "\"module\":%s", PTRSTR(ps, module));
  return ret(e);
}

EXPORT hipError_t hipModuleGetFunction(hipFunction_t *fn, hipModule_t module, const char *name) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!fn || !name || !*name)) e = hipErrorInvalidValue;
  else if (e == hipSuccess && (!module || module->magic != MODULE_MAGIC)) e = hipErrorInvalidHandle;
  else if (e == hipSuccess) {
    e = hipErrorNotFound;
    for (int k = 0; k < NPROBES; k++)
      if (module->has[k] && !strcmp(name, probe_names[k])) {
        *fn = (hipFunction_t)&module->fn[k];
        e = hipSuccess;
      }
  }
  calllog("hip", "hipModuleGetFunction", e, "\"module\":%s,\"name\":\"%.64s\"", PTRSTR(ps, module), name ? name : "");
  return ret(e);
}

/* One declared access of a probe kernel, queued without waiting (a launch
 * returns before its kernel runs; a fault surfaces at the next synchronize,
 * or aborts the process from ROCr's event thread). 1 when it went through. */
static int probe_access(const void *addr, size_t bytes, int write) {
  return launch(addr, 0, bytes, write | SIMGPU_LAUNCH_NOWAIT) == hipSuccess;
}

static void probe_store(void *addr, uint32_t value) {
  if (simgpu_hsa_range_state(addr, 4) == 1) __atomic_store_n((uint32_t *)addr, value, __ATOMIC_RELEASE);
}

/* The probe kernels' declared effects (their arguments are probes.hip's):
 *   rocm_fix_probe_read(p, words, out): reads [p, p+4·words), then writes *out
 *     (xors in 0: the simulator does not compute the sum);
 *   rocm_fix_probe_write(p, words, value): writes value to [p, p+4·words);
 *   rocm_fix_probe_signal(flag, answer, spins): writes *flag, reads *answer and
 *     stores 2 in *flag ("signalled and answered": the handshake with the host
 *     is not simulated, the device has no concurrency). */
EXPORT hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                        unsigned by, unsigned bz, unsigned shmem, hipStream_t stream, void **params,
                                        void **extra) {
  (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz;
  char ps[32];
  hipError_t e = ensure_init();
  struct simgpu_function *fn = (struct simgpu_function *)f;
  if (e == hipSuccess && (!fn || fn->magic != FUNCTION_MAGIC)) e = hipErrorInvalidHandle;
  else if (e == hipSuccess && (!stream_ok(stream) || !params || extra)) e = hipErrorInvalidValue;
  else if (e == hipSuccess && simgpu_hsa_queues_dead()) e = hipErrorLaunchFailure;
  if (e == hipSuccess) {
    void *p = *(void **)params[0];
    switch (fn->probe) {
    case PROBE_READ: {
      unsigned long words = *(unsigned long *)params[1];
      void *out = *(void **)params[2];
      if (probe_access(p, words * 4, 0)) probe_access(out, 4, 1);
      break;
    }
    case PROBE_WRITE: {
      unsigned long words = *(unsigned long *)params[1];
      uint32_t value = *(uint32_t *)params[2];
      if (probe_access(p, words * 4, 1)) {
        simgpu_hsa_wait_idle();
        if (!simgpu_hsa_queues_dead() && simgpu_hsa_range_state(p, words * 4) == 1)
          for (unsigned long i = 0; i < words; i++) ((uint32_t *)p)[i] = value;
      }
      break;
    }
    case PROBE_SIGNAL: {
      void *answer = *(void **)params[1];
      if (probe_access(p, 4, 1) && probe_access(answer, 4, 0)) {
        simgpu_hsa_wait_idle();
        if (!simgpu_hsa_queues_dead()) probe_store(p, 2);
      }
      break;
    }
    }
  }
  calllog("hip", "hipModuleLaunchKernel", e, "\"f\":%s,\"kernel\":\"%s\",\"shmem\":%u", PTRSTR(ps, f),
          fn && fn->magic == FUNCTION_MAGIC ? probe_names[fn->probe] : "", shmem);
  return ret(e);
}
