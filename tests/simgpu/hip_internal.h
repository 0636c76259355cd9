/* Between the files of the simulated libamdhip64 only (hidden symbols). */
#ifndef SIMGPU_HIP_INTERNAL_H
#define SIMGPU_HIP_INTERNAL_H
#include "simgpu.h"

#define HIDDEN __attribute__((visibility("hidden")))
#ifndef SIMGPU_ROCM_VERSION_DEFAULT
#define SIMGPU_ROCM_VERSION_DEFAULT 604 /* scripts/simgpu-build sets 502, 604 or 702 per build */
#endif
#define MAX_DEV 16

/* AMD's builds (scripts/simgpu-build 6.4-amd, 7.2-amd; hip_table.c): the
 * exported function dispatches through the API table, and the runtime's own
 * implementation is hidden under NAME_impl. Debian's builds: the function itself. */
#ifdef SIMGPU_ROCPROFILER_REGISTER
#define EXPORT_TABLED HIDDEN
#define TABLED(name) name##_impl
HIDDEN hipError_t hipMalloc_impl(void **ptr, size_t size);
HIDDEN hipError_t hipFree_impl(void *ptr);
HIDDEN const char *hipGetErrorName_impl(hipError_t error);
#else
#define EXPORT_TABLED __attribute__((visibility("default")))
#define TABLED(name) name
#endif

struct device {
  hsa_agent_t agent;
  hsa_amd_memory_pool_t coarse, ext_fine, fine; /* VRAM pools; handle 0 when absent */
  uint32_t node;
  char name[64];
  char product[64];
  uint32_t chip_id;
};

extern HIDDEN struct device devs[MAX_DEV];
extern HIDDEN int ndev;
extern HIDDEN __thread int current_dev;
extern HIDDEN hsa_amd_memory_pool_t cpu_fine, cpu_coarse;

HIDDEN hipError_t ensure_init(void);
/* Records e as the thread's last error (per version) and returns it. */
HIDDEN hipError_t ret(hipError_t e);
HIDDEN int rocm_version(void);
/* hsa_amd_memory_pool_allocate, plus access for every GPU when it is host memory. */
HIDDEN hipError_t pool_alloc(hsa_amd_memory_pool_t pool, size_t size, void **ptr);
HIDDEN hipError_t free_any(void *ptr);
/* hip_alloc.c: clr's map of allocations (base, size as asked). */
HIDDEN void memobj_add(void *base, size_t size, int vram);
HIDDEN int memobj_find(const void *p, void **base, size_t *size);
HIDDEN void memobj_remove(const void *base);
HIDDEN void mempool_release_freed(void);
#endif
