/*
 * simgpu's libamdhip64.so.6: a stand-in for clr's HIP runtime. Every
 * allocation goes through hsa_amd_memory_pool_allocate@ROCR_1 by a PLT call
 * (as real libamdhip64 does, facts §2), choosing the pool as clr does for a
 * discrete GPU without XNACK (facts §3). HIP calls initialise HSA implicitly.
 * Like clr, the runtime also allocates a buffer of its own (hostcall/signals)
 * from the CPU fine-grained pool through the same PLT call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "calllog.h"
#include "simgpu.h"
#include "simgpu_private.h"
#include "hip_internal.h"

#define EXPORT __attribute__((visibility("default")))

_Static_assert(sizeof(hipDeviceProp_tR0600) == 1472, "R0600 layout");
_Static_assert(offsetof(hipDeviceProp_tR0600, gcnArchName) == 1160, "R0600 gcnArchName");
_Static_assert(sizeof(hsa_amd_event_t) == 32, "event layout (facts §1)");


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

static void runtime_init(void) {
  if (hsa_init() != HSA_STATUS_SUCCESS) { init_error = hipErrorNoDevice; return; }
  hsa_iterate_agents(agent_cb, NULL);
  if (ndev == 0) { init_error = hipErrorNoDevice; return; }
  /* clr's own hostcall/signal buffer: fine-grained host memory, allocated
   * through the exported (and so interposable) HSA function. */
  if (!cpu_fine.handle || hsa_amd_memory_pool_allocate(cpu_fine, 4096, 0, &internal_buffer) != HSA_STATUS_SUCCESS)
    init_error = hipErrorSharedObjectInitFailed;
}

HIDDEN hipError_t ensure_init(void) {
  pthread_once(&once, runtime_init);
  return init_error;
}

HIDDEN hipError_t ret(hipError_t e) {
  if (e != hipSuccess) last_error = e;
  return e;
}

HIDDEN int rocm_version(void) { return simgpu_hsa_rocm_version(); }

HIDDEN hipError_t pool_alloc(hsa_amd_memory_pool_t pool, size_t size, void **ptr) {
  if (!pool.handle) return hipErrorOutOfMemory; /* an invisible pool's handle is 0 (facts §3) */
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
  /* RDNA1 names carry the xnack feature as clr prints it (facts §6). */
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

EXPORT hipError_t hipMalloc(void **ptr, size_t size) {
  char ps[32];
  hipError_t e = ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    *ptr = NULL;
    if (size) e = pool_alloc(devs[current_dev].coarse, size, ptr); /* coarse VRAM (facts §3) */
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

EXPORT hipError_t hipFree(void *ptr) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess) e = free_any(ptr);
  calllog("hip", "hipFree", e, "\"ptr\":%s", PTRSTR(ps, ptr));
  return ret(e);
}

static int host_coherent_env(void) {
  const char *v = getenv("HIP_HOST_COHERENT");
  return v && atoi(v) == 1; /* defaults to 0 (facts §3) */
}

/* hipHostMalloc's pool choice (facts §3). */
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
    if (rocm_version() < 603) { /* up to 6.2: the device allocator with the raw flags (facts §3) */
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

/* hipExtMallocWithFlags compares flags with == (facts §3). */
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
    if (hmm) { /* without HMM: a logged no-op returning success (facts §3) */
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

EXPORT hipError_t hipMemcpy(void *dst, const void *src, size_t size, int kind) {
  char ds[32], ss[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && size && (!dst || !src)) e = hipErrorInvalidValue;
  if (e == hipSuccess && (kind < hipMemcpyHostToHost || kind > hipMemcpyDefault)) e = hipErrorInvalidValue;
  if (e == hipSuccess && size && (simgpu_hsa_range_state(dst, size) < 0 || simgpu_hsa_range_state(src, size) < 0))
    e = hipErrorInvalidValue;
  if (e == hipSuccess && size) memmove(dst, src, size);
  calllog("hip", "hipMemcpy", e, "\"dst\":%s,\"src\":%s,\"size\":%zu,\"kind\":%d", PTRSTR(ds, dst), PTRSTR(ss, src), size,
          kind);
  return ret(e);
}

EXPORT hipError_t hipMemset(void *dst, int value, size_t size) {
  char ds[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && size && simgpu_hsa_range_state(dst, size) != 1) e = hipErrorInvalidValue;
  if (e == hipSuccess && size) memset(dst, value, size);
  calllog("hip", "hipMemset", e, "\"dst\":%s,\"value\":%d,\"size\":%zu", PTRSTR(ds, dst), value, size);
  return ret(e);
}

EXPORT hipError_t hipDeviceSynchronize(void) {
  hipError_t e = ensure_init();
  if (e == hipSuccess) simgpu_hsa_wait_idle(); /* a kernel that faulted completes only once the event is handled */
  if (e == hipSuccess) mempool_release_freed(); /* clr-mempool: Device::ReleaseFreedMemory */
  if (e == hipSuccess && simgpu_hsa_queues_dead()) e = hipErrorLaunchFailure; /* the queues are gone (facts §1) */
  calllog("hip", "hipDeviceSynchronize", e, " ");
  return ret(e);
}

/* HIP_VERSION of the release modelled: major*10000000 + minor*100000 + patch. */
EXPORT hipError_t hipRuntimeGetVersion(int *version) {
  hipError_t e = version ? hipSuccess : hipErrorInvalidValue;
  if (version) {
    int v = rocm_version();
    *version = (v / 100) * 10000000 + (v % 100) * 100000;
  }
  calllog("hip", "hipRuntimeGetVersion", e, "\"version\":%d", version ? *version : -1);
  return ret(e);
}

EXPORT hipError_t hipPeekAtLastError(void) {
  hipError_t e = last_error;
  calllog("hip", "hipPeekAtLastError", e, " ");
  return e;
}

/* The last error, sticky until read (clr 6.x: set on failure only, as CUDA). */
EXPORT hipError_t hipGetLastError(void) {
  hipError_t e = last_error;
  last_error = hipSuccess;
  calllog("hip", "hipGetLastError", e, " ");
  return e;
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
  default: s = "unknown error"; break;
  }
  calllog("hip", "hipGetErrorString", 0, "\"error\":%d", error);
  return s;
}

/* 6.x semantics (facts §4): opens "libamdhip64.so" by name and looks the
 * symbol up on that handle, which bypasses preloaded definitions. */
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
