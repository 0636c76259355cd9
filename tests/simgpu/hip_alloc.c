/*
 * The simulated libamdhip64's allocation entry points beyond hipMalloc, along
 * clr's real paths (ROCm/clr hipamd/src, tag rocm-6.4.3 unless noted;
 * ROCm/hipamd src/ at rocm-5.2.3 for 5.2):
 *
 * - clr-memobj: clr keeps every allocation in a map (MemObjMap, device.cpp)
 *   under its base with the size as asked; an interior pointer resolves to
 *   its allocation (hipFree of base+offset frees it whole,
 *   hipMemGetAddressRange returns base and the size as asked).
 * - clr-meminfo: hipMemGetInfo's total is the coarse VRAM pool's size; free
 *   is HSA_AMD_AGENT_INFO_MEMORY_AVAIL (rocdevice.cpp globalFreeMemory) from
 *   5.6 on; in 5.2 it is total minus what this process allocated through
 *   clr (ROCclr rocdevice.cpp freeMem_/updateFreeMemory, rocm-5.2.3).
 * - clr-pitch: hipMallocPitch/hipMalloc3D: pitch = alignUp(width, 256)
 *   (imagePitchAlignment_), one allocation of pitch*height*depth through the
 *   hipMalloc path; a zero dimension gives NULL and success;
 *   hipMemAllocPitch rejects zero sizes and element sizes other than 4/8/16.
 * - clr-array: arrays are images (ihipImageCreate); their memory comes from
 *   the device allocator and, when that fails, silently from host memory
 *   (rocmemory.cpp image alloc: deviceLocalAlloc, else hostAlloc). The image
 *   size is the runtime's (hsa_ext_image_data_get_info); the simulation takes
 *   rows of alignUp(width * element size, 256) bytes, as for pitched memory.
 * - clr-mempool: hipMallocAsync/hipMallocFromPoolAsync allocate each request
 *   exactly through the hipMalloc path, or hand out a whole freed block of at
 *   least the size (Heap::FindMemory, smallest first); hipFreeAsync keeps
 *   the block allocated in the pool's free heap until a synchronize releases
 *   it down to the release threshold (default 0) or hipMemPoolTrimTo does
 *   (hip_mempool_impl.cpp).
 * - clr-vmm: hipMemCreate -> hsa_amd_vmem_handle_create on the coarse pool
 *   (size a multiple of 2048); hipMemAddressReserve ->
 *   hsa_amd_vmem_address_reserve (size a multiple of the granularity, else
 *   hipErrorOutOfMemory); hipMemMap -> hsa_amd_vmem_map (offset 0 only) and
 *   a memobj of the mapped size; hipMemSetAccess -> hsa_amd_vmem_set_access;
 *   hipMemGetAllocationGranularity answers the pool's
 *   RUNTIME_ALLOC_GRANULE for both options (hip_vm.cpp).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "calllog.h"
#include "hip_internal.h"
#include "simgpu_private.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- clr-memobj ---- */
struct memobj { uintptr_t base; size_t size; int device; int vram; };
static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;
static struct memobj *objs;
static size_t nobjs, cap_objs;

static size_t obj_lower(uintptr_t base) {
  size_t lo = 0, hi = nobjs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (objs[mid].base < base) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

HIDDEN void memobj_add(void *base, size_t size, int vram) {
  pthread_mutex_lock(&mlock);
  if (nobjs == cap_objs) {
    size_t nc = cap_objs ? cap_objs * 2 : 64;
    struct memobj *n = realloc(objs, nc * sizeof *objs);
    if (!n) { pthread_mutex_unlock(&mlock); return; }
    objs = n;
    cap_objs = nc;
  }
  size_t i = obj_lower((uintptr_t)base);
  memmove(&objs[i + 1], &objs[i], (nobjs - i) * sizeof *objs);
  objs[i] = (struct memobj){(uintptr_t)base, size, current_dev, vram};
  nobjs++;
  pthread_mutex_unlock(&mlock);
}

/* The allocation holding p (its base and size as asked); 0 if none. */
HIDDEN int memobj_find(const void *p, void **base, size_t *size) {
  pthread_mutex_lock(&mlock);
  size_t i = obj_lower((uintptr_t)p + 1);
  int found = 0;
  if (i > 0) {
    const struct memobj *o = &objs[i - 1];
    uintptr_t a = (uintptr_t)p;
    if (a == o->base || a < o->base + o->size) {
      if (base) *base = (void *)o->base;
      if (size) *size = o->size;
      found = 1;
    }
  }
  pthread_mutex_unlock(&mlock);
  return found;
}

HIDDEN void memobj_remove(const void *base) {
  pthread_mutex_lock(&mlock);
  size_t i = obj_lower((uintptr_t)base);
  if (i < nobjs && objs[i].base == (uintptr_t)base) {
    memmove(&objs[i], &objs[i + 1], (nobjs - i - 1) * sizeof *objs);
    nobjs--;
  }
  pthread_mutex_unlock(&mlock);
}

static size_t device_bytes(int device) {
  size_t n = 0;
  pthread_mutex_lock(&mlock);
  for (size_t i = 0; i < nobjs; i++)
    if (objs[i].vram && objs[i].device == device) n += objs[i].size;
  pthread_mutex_unlock(&mlock);
  return n;
}

/* ---- clr-meminfo ---- */
EXPORT hipError_t hipMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  hipError_t e = ensure_init();
  size_t total = 0, avail = 0;
  if (e == hipSuccess) {
    const struct device *d = &devs[current_dev];
    hsa_amd_memory_pool_get_info(d->coarse, HSA_AMD_MEMORY_POOL_INFO_SIZE, &total);
    if (rocm_version() >= 506) {
      uint64_t a = 0;
      hsa_agent_get_info(d->agent, HSA_AMD_AGENT_INFO_MEMORY_AVAIL, &a);
      avail = (size_t)(a / 1024) * 1024; /* clr works in KiB */
    } else {
      size_t used = device_bytes(current_dev);
      avail = used < total ? total - used : 0;
    }
    if (free_bytes) *free_bytes = avail;
    if (total_bytes) *total_bytes = total;
  }
  calllog("hip", "hipMemGetInfo", e, "\"free\":%zu,\"total\":%zu", avail, total);
  return ret(e);
}

/* The hipMalloc path (ihipMalloc): coarse VRAM of the current device. */
static hipError_t device_alloc(void **ptr, size_t size) {
  *ptr = NULL;
  if (!size) return hipSuccess;
  size_t total = 0;
  hsa_amd_memory_pool_get_info(devs[current_dev].coarse, HSA_AMD_MEMORY_POOL_INFO_SIZE, &total);
  if (size > total) return hipErrorOutOfMemory; /* maxMemAllocSize_: nothing is tried */
  return pool_alloc(devs[current_dev].coarse, size, ptr);
}

/* ---- clr-pitch ---- */
static hipError_t malloc_pitch(void **ptr, size_t *pitch, size_t width, size_t height, size_t depth) {
  if (!ptr || !pitch) return hipErrorInvalidValue;
  hipError_t e = ensure_init();
  if (e != hipSuccess) return e;
  *ptr = NULL;
  if (!width || !height || !depth) return hipSuccess;
  *pitch = (width + 255) & ~(size_t)255;
  size_t size = *pitch * height * depth;
  if (size / depth / height != *pitch) return hipErrorOutOfMemory;
  return device_alloc(ptr, size);
}

EXPORT hipError_t hipMallocPitch(void **ptr, size_t *pitch, size_t width, size_t height) {
  char ps[32];
  hipError_t e = malloc_pitch(ptr, pitch, width, height, 1);
  calllog("hip", "hipMallocPitch", e, "\"width\":%zu,\"height\":%zu,\"ptr\":%s", width, height,
          PTRSTR(ps, e == hipSuccess && ptr ? *ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMemAllocPitch(hipDeviceptr_t *dptr, size_t *pitch, size_t width, size_t height,
                                   unsigned int elem) {
  char ps[32];
  hipError_t e = (!width || !height || (elem != 4 && elem != 8 && elem != 16))
                     ? hipErrorInvalidValue
                     : malloc_pitch(dptr, pitch, width, height, 1);
  calllog("hip", "hipMemAllocPitch", e, "\"width\":%zu,\"height\":%zu,\"ptr\":%s", width, height,
          PTRSTR(ps, e == hipSuccess && dptr ? *dptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMalloc3D(hipPitchedPtr *pp, hipExtent ext) {
  char ps[32];
  hipError_t e = hipErrorInvalidValue;
  if (pp) {
    size_t pitch = 0;
    e = malloc_pitch(&pp->ptr, &pitch, ext.width, ext.height, ext.depth);
    if (e == hipSuccess) {
      pp->pitch = pitch;
      pp->xsize = ext.width;
      pp->ysize = ext.height;
    }
  }
  calllog("hip", "hipMalloc3D", e, "\"width\":%zu,\"height\":%zu,\"depth\":%zu,\"ptr\":%s", ext.width, ext.height,
          ext.depth, PTRSTR(ps, e == hipSuccess && pp ? pp->ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMemGetAddressRange(hipDeviceptr_t *pbase, size_t *psize, hipDeviceptr_t dptr) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && !memobj_find(dptr, pbase, psize))
    e = rocm_version() >= 600 ? hipErrorNotFound : 17; /* 5.2: hipErrorInvalidDevicePointer */
  calllog("hip", "hipMemGetAddressRange", e, "\"ptr\":%s", PTRSTR(ps, dptr));
  return ret(e);
}

/* ---- clr-mempool: one pool per device (the default pool) ---- */
struct mempool {
  struct { void *ptr; size_t size; } *free_heap; /* kept sorted by size */
  size_t nfree, cap_free;
  int device;
};
static struct mempool default_pools[MAX_DEV];
static struct mempool *created_pools[64]; /* hipMemPoolCreate's */
static pthread_mutex_t plock = PTHREAD_MUTEX_INITIALIZER;

static struct mempool *pool_of(hipMemPool_t p) {
  for (int i = 0; i < MAX_DEV; i++)
    if ((void *)p == (void *)&default_pools[i]) return &default_pools[i];
  for (int i = 0; i < 64; i++)
    if (p && (void *)p == (void *)created_pools[i]) return created_pools[i];
  return NULL;
}

static hipError_t pool_allocate(struct mempool *mp, void **ptr, size_t size) {
  *ptr = NULL;
  if (!size) return hipSuccess;
  pthread_mutex_lock(&plock);
  for (size_t k = 0; k < mp->nfree; k++)
    if (mp->free_heap[k].size >= size) { /* a whole freed block, smallest first */
      *ptr = mp->free_heap[k].ptr;
      memmove(&mp->free_heap[k], &mp->free_heap[k + 1], (mp->nfree - k - 1) * sizeof *mp->free_heap);
      mp->nfree--;
      pthread_mutex_unlock(&plock);
      return hipSuccess;
    }
  pthread_mutex_unlock(&plock);
  int saved = current_dev;
  current_dev = mp->device;
  hipError_t e = device_alloc(ptr, size);
  current_dev = saved;
  return e;
}

/* Releases every freed block of every pool (release threshold 0): what a
 * synchronize does (Device::ReleaseFreedMemory). */
HIDDEN void mempool_release_freed(void) {
  for (int i = 0; i < MAX_DEV; i++) hipMemPoolTrimTo((hipMemPool_t)(void *)&default_pools[i], 0);
}

EXPORT hipError_t hipDeviceGetDefaultMemPool(hipMemPool_t *mem_pool, int device) {
  hipError_t e = mem_pool ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess && (device < 0 || device >= ndev)) e = hipErrorInvalidDevice;
  if (e == hipSuccess) {
    default_pools[device].device = device;
    *mem_pool = (hipMemPool_t)(void *)&default_pools[device];
  }
  calllog("hip", "hipDeviceGetDefaultMemPool", e, "\"device\":%d", device);
  return ret(e);
}

EXPORT hipError_t hipMallocAsync(void **dev_ptr, size_t size, hipStream_t stream) {
  char ps[32];
  (void)stream;
  hipError_t e = dev_ptr ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    default_pools[current_dev].device = current_dev;
    e = pool_allocate(&default_pools[current_dev], dev_ptr, size);
  }
  calllog("hip", "hipMallocAsync", e, "\"size\":%zu,\"ptr\":%s", size, PTRSTR(ps, e == hipSuccess ? *dev_ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMallocFromPoolAsync(void **dev_ptr, size_t size, hipMemPool_t mem_pool, hipStream_t stream) {
  char ps[32];
  (void)stream;
  struct mempool *mp = pool_of(mem_pool);
  hipError_t e = dev_ptr && mp ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) e = pool_allocate(mp, dev_ptr, size);
  calllog("hip", "hipMallocFromPoolAsync", e, "\"size\":%zu,\"ptr\":%s", size,
          PTRSTR(ps, e == hipSuccess ? *dev_ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipFreeAsync(void *dev_ptr, hipStream_t stream) {
  char ps[32];
  (void)stream;
  hipError_t e = ensure_init();
  if (e == hipSuccess && !dev_ptr) e = rocm_version() >= 700 ? hipSuccess : hipErrorInvalidValue;
  else if (e == hipSuccess) {
    void *base = NULL;
    size_t size = 0;
    if (!memobj_find(dev_ptr, &base, &size)) e = hipErrorInvalidValue;
    else {
      struct mempool *mp = &default_pools[current_dev];
      pthread_mutex_lock(&plock);
      if (mp->nfree == mp->cap_free) {
        size_t nc = mp->cap_free ? mp->cap_free * 2 : 16;
        void *n = realloc(mp->free_heap, nc * sizeof *mp->free_heap);
        if (n) { mp->free_heap = n; mp->cap_free = nc; }
      }
      if (mp->nfree < mp->cap_free) {
        size_t k = 0;
        while (k < mp->nfree && mp->free_heap[k].size <= size) k++;
        memmove(&mp->free_heap[k + 1], &mp->free_heap[k], (mp->nfree - k) * sizeof *mp->free_heap);
        mp->free_heap[k].ptr = base;
        mp->free_heap[k].size = size;
        mp->nfree++;
        base = NULL;
      }
      pthread_mutex_unlock(&plock);
      if (base) e = free_any(base); /* no room to keep it: give it back now */
    }
  }
  calllog("hip", "hipFreeAsync", e, "\"ptr\":%s", PTRSTR(ps, dev_ptr));
  return ret(e);
}

EXPORT hipError_t hipMemPoolTrimTo(hipMemPool_t mem_pool, size_t keep) {
  struct mempool *mp = pool_of(mem_pool);
  hipError_t e = mp ? hipSuccess : hipErrorInvalidValue;
  while (mp) {
    void *victim = NULL;
    pthread_mutex_lock(&plock);
    size_t held = 0;
    for (size_t k = 0; k < mp->nfree; k++) held += mp->free_heap[k].size;
    if (held > keep && mp->nfree) {
      victim = mp->free_heap[0].ptr;
      memmove(&mp->free_heap[0], &mp->free_heap[1], (mp->nfree - 1) * sizeof *mp->free_heap);
      mp->nfree--;
    }
    pthread_mutex_unlock(&plock);
    if (!victim) break;
    free_any(victim);
  }
  calllog("hip", "hipMemPoolTrimTo", e, "\"keep\":%zu", keep);
  return ret(e);
}

#if SIMGPU_ROCM_VERSION_DEFAULT >= 600
EXPORT hipError_t hipMemPoolCreate(hipMemPool_t *mem_pool, const hipMemPoolProps *props) {
  hipError_t e = mem_pool && props ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess && (props->allocType != hipMemAllocationTypePinned ||
                          props->location.type != hipMemLocationTypeDevice || props->location.id < 0 ||
                          props->location.id >= ndev))
    e = hipErrorInvalidValue;
  if (e == hipSuccess) {
    struct mempool *mp = calloc(1, sizeof *mp);
    int slot = -1;
    pthread_mutex_lock(&plock);
    for (int i = 0; mp && i < 64 && slot < 0; i++)
      if (!created_pools[i]) { created_pools[i] = mp; slot = i; }
    pthread_mutex_unlock(&plock);
    if (slot < 0) { free(mp); e = hipErrorOutOfMemory; }
    else {
      mp->device = props->location.id;
      *mem_pool = (hipMemPool_t)(void *)mp;
    }
  }
  calllog("hip", "hipMemPoolCreate", e, " ");
  return ret(e);
}

/* hip_mempool.cpp: the default pool cannot be destroyed; the freed blocks go back. */
EXPORT hipError_t hipMemPoolDestroy(hipMemPool_t mem_pool) {
  struct mempool *mp = pool_of(mem_pool);
  hipError_t e = mp && mp != &default_pools[mp->device] ? hipSuccess : hipErrorInvalidValue;
  if (e == hipSuccess) {
    hipMemPoolTrimTo(mem_pool, 0);
    pthread_mutex_lock(&plock);
    for (int i = 0; i < 64; i++)
      if (created_pools[i] == mp) created_pools[i] = NULL;
    pthread_mutex_unlock(&plock);
    free(mp->free_heap);
    free(mp);
  }
  calllog("hip", "hipMemPoolDestroy", e, " ");
  return ret(e);
}

/* ---- clr-array ---- */
EXPORT hipError_t hipMallocArray(hipArray_t *array, const hipChannelFormatDesc *desc, size_t width, size_t height,
                                 unsigned int flags) {
  (void)flags;
  hipError_t e = array && desc && width ? ensure_init() : hipErrorInvalidValue;
  size_t elem = desc ? (size_t)(desc->x + desc->y + desc->z + desc->w) / 8 : 0;
  if (e == hipSuccess && (!elem || desc->x < 0 || desc->y < 0 || desc->z < 0 || desc->w < 0)) e = hipErrorInvalidValue;
  if (e == hipSuccess) {
    size_t rows = height ? height : 1;
    size_t size = ((width * elem + 255) & ~(size_t)255) * rows;
    hipArray *a = calloc(1, sizeof *a);
    void *p = NULL;
    if (!a) e = hipErrorOutOfMemory;
    else if (device_alloc(&p, size) != hipSuccess && pool_alloc(cpu_coarse, size, &p) != hipSuccess) {
      free(a);
      e = hipErrorOutOfMemory;
    } else {
      a->data = p;
      a->desc = *desc;
      a->width = (unsigned)width;
      a->height = (unsigned)height;
      *array = a;
    }
  }
  calllog("hip", "hipMallocArray", e, "\"width\":%zu,\"height\":%zu", width, height);
  return ret(e);
}

EXPORT hipError_t hipFreeArray(hipArray_t array) {
  hipError_t e = array ? ensure_init() : hipErrorInvalidValue;
  if (e == hipSuccess) {
    e = free_any(array->data);
    free(array);
  }
  calllog("hip", "hipFreeArray", e, " ");
  return ret(e);
}

/* ---- clr-vmm ---- */
struct vmm_handle { hsa_amd_vmem_alloc_handle_t h; size_t size; };

static size_t granularity(void) {
  size_t g = 4096;
  hsa_amd_memory_pool_get_info(devs[current_dev].coarse, HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE, &g);
  return g;
}

EXPORT hipError_t hipMemGetAllocationGranularity(size_t *g, const hipMemAllocationProp *prop, int option) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!g || !prop || prop->type != hipMemAllocationTypePinned ||
                          prop->location.type != hipMemLocationTypeDevice ||
                          (option != hipMemAllocationGranularityMinimum &&
                           option != hipMemAllocationGranularityRecommended)))
    e = hipErrorInvalidValue;
  if (e == hipSuccess) *g = granularity(); /* both options: virtualMemAllocGranularity_ */
  calllog("hip", "hipMemGetAllocationGranularity", e, "\"option\":%d", option);
  return ret(e);
}

EXPORT hipError_t hipMemCreate(hipMemGenericAllocationHandle_t *handle, size_t size, const hipMemAllocationProp *prop,
                               unsigned long long flags) {
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!handle || !prop || flags || !size || prop->type != hipMemAllocationTypePinned ||
                          prop->location.type != hipMemLocationTypeDevice || prop->location.id < 0 ||
                          prop->location.id >= ndev || size % 2048))
    e = hipErrorInvalidValue;
  if (e == hipSuccess) {
    struct vmm_handle *vh = calloc(1, sizeof *vh);
    if (!vh) e = hipErrorOutOfMemory;
    else if (hsa_amd_vmem_handle_create(devs[prop->location.id].coarse, size, MEMORY_TYPE_PINNED, 0, &vh->h) !=
             HSA_STATUS_SUCCESS) {
      free(vh);
      e = hipErrorOutOfMemory;
    } else {
      vh->size = size;
      *handle = (hipMemGenericAllocationHandle_t)(void *)vh;
    }
  }
  calllog("hip", "hipMemCreate", e, "\"size\":%zu", size);
  return ret(e);
}

EXPORT hipError_t hipMemRelease(hipMemGenericAllocationHandle_t handle) {
  struct vmm_handle *vh = (struct vmm_handle *)(void *)handle;
  hipError_t e = ensure_init();
  if (e == hipSuccess && !vh) e = hipErrorInvalidValue;
  if (e == hipSuccess && hsa_amd_vmem_handle_release(vh->h) != HSA_STATUS_SUCCESS) e = hipErrorInvalidValue;
  if (e == hipSuccess) free(vh);
  calllog("hip", "hipMemRelease", e, " ");
  return ret(e);
}

EXPORT hipError_t hipMemAddressReserve(void **ptr, size_t size, size_t alignment, void *addr,
                                       unsigned long long flags) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || flags)) e = hipErrorInvalidValue;
  else if (e == hipSuccess && (!size || size % granularity() || (alignment & (alignment - 1))))
    e = hipErrorOutOfMemory; /* hipErrorMemoryAllocation */
  if (e == hipSuccess && hsa_amd_vmem_address_reserve(ptr, size, (uint64_t)(uintptr_t)addr, 0) != HSA_STATUS_SUCCESS)
    e = hipErrorOutOfMemory;
  calllog("hip", "hipMemAddressReserve", e, "\"size\":%zu,\"ptr\":%s", size,
          PTRSTR(ps, e == hipSuccess ? *ptr : NULL));
  return ret(e);
}

EXPORT hipError_t hipMemAddressFree(void *ptr, size_t size) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || !size)) e = hipErrorInvalidValue;
  if (e == hipSuccess && hsa_amd_vmem_address_free(ptr, size) != HSA_STATUS_SUCCESS) e = hipErrorUnknown;
  calllog("hip", "hipMemAddressFree", e, "\"ptr\":%s,\"size\":%zu", PTRSTR(ps, ptr), size);
  return ret(e);
}

EXPORT hipError_t hipMemMap(void *ptr, size_t size, size_t offset, hipMemGenericAllocationHandle_t handle,
                            unsigned long long flags) {
  char ps[32];
  struct vmm_handle *vh = (struct vmm_handle *)(void *)handle;
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || !vh || !size || offset || flags)) e = hipErrorInvalidValue;
  if (e == hipSuccess && hsa_amd_vmem_map(ptr, size, 0, vh->h, 0) != HSA_STATUS_SUCCESS) e = hipErrorInvalidValue;
  if (e == hipSuccess) memobj_add(ptr, size, 0); /* MemObjMap::AddMemObj with the mapped size */
  calllog("hip", "hipMemMap", e, "\"ptr\":%s,\"size\":%zu", PTRSTR(ps, ptr), size);
  return ret(e);
}

EXPORT hipError_t hipMemUnmap(void *ptr, size_t size) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || !size)) e = hipErrorInvalidValue;
  if (e == hipSuccess && hsa_amd_vmem_unmap(ptr, size) != HSA_STATUS_SUCCESS) e = hipErrorInvalidValue;
  if (e == hipSuccess) memobj_remove(ptr);
  calllog("hip", "hipMemUnmap", e, "\"ptr\":%s,\"size\":%zu", PTRSTR(ps, ptr), size);
  return ret(e);
}

EXPORT hipError_t hipMemSetAccess(void *ptr, size_t size, const hipMemAccessDesc *desc, size_t count) {
  char ps[32];
  hipError_t e = ensure_init();
  if (e == hipSuccess && (!ptr || !desc || !count || count > MAX_DEV)) e = hipErrorInvalidValue;
  hsa_amd_memory_access_desc_t d[MAX_DEV];
  for (size_t k = 0; e == hipSuccess && k < count; k++) {
    if (desc[k].location.type != hipMemLocationTypeDevice || desc[k].location.id < 0 || desc[k].location.id >= ndev)
      e = hipErrorInvalidValue;
    else {
      d[k].agent_handle = devs[desc[k].location.id].agent;
      d[k].permissions = desc[k].flags == hipMemAccessFlagsProtReadWrite ? HSA_ACCESS_PERMISSION_RW
                         : desc[k].flags == hipMemAccessFlagsProtRead    ? HSA_ACCESS_PERMISSION_RO
                                                                         : HSA_ACCESS_PERMISSION_NONE;
    }
  }
  if (e == hipSuccess && hsa_amd_vmem_set_access(ptr, size, d, count) != HSA_STATUS_SUCCESS) e = hipErrorInvalidValue;
  calllog("hip", "hipMemSetAccess", e, "\"ptr\":%s,\"size\":%zu", PTRSTR(ps, ptr), size);
  return ret(e);
}

#else
/* ROCm 5.x: ROCr has no hsa_amd_vmem_* (6.0+); the HIP VMM entry points exist
 * but cannot work, so they answer as the generated stubs do. */
EXPORT hipError_t hipMemGetAllocationGranularity(size_t *g, const hipMemAllocationProp *prop, int option) {
  (void)g; (void)prop; (void)option;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemCreate(hipMemGenericAllocationHandle_t *h, size_t size, const hipMemAllocationProp *prop,
                               unsigned long long flags) {
  (void)h; (void)size; (void)prop; (void)flags;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemRelease(hipMemGenericAllocationHandle_t h) {
  (void)h;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemAddressReserve(void **ptr, size_t size, size_t alignment, void *addr, unsigned long long flags) {
  (void)ptr; (void)size; (void)alignment; (void)addr; (void)flags;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemAddressFree(void *ptr, size_t size) {
  (void)ptr; (void)size;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemMap(void *ptr, size_t size, size_t offset, hipMemGenericAllocationHandle_t h,
                            unsigned long long flags) {
  (void)ptr; (void)size; (void)offset; (void)h; (void)flags;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemUnmap(void *ptr, size_t size) {
  (void)ptr; (void)size;
  return ret(hipErrorNotSupported);
}
EXPORT hipError_t hipMemSetAccess(void *ptr, size_t size, const hipMemAccessDesc *desc, size_t count) {
  (void)ptr; (void)size; (void)desc; (void)count;
  return ret(hipErrorNotSupported);
}
#endif

/* ---- the simulator's own test API ---- */
EXPORT size_t simgpuMappedBytes(const void *addr, size_t cap) {
  if (ensure_init() != hipSuccess) return 0;
  return simgpu_hsa_mapped_run(devs[current_dev].agent, addr, cap);
}
