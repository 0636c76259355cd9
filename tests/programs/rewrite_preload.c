/*
 * A deliberately naive preload for the tests: it sends EVERY fine-grained
 * host allocation, the HIP runtime's own included, to the CPU coarse pool,
 * and defines hipMalloc (counting calls) to show what bypasses a preload.
 * The simulated device's internal-coherence rule must catch the first part.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "simgpu.h"

static hsa_amd_memory_pool_t coarse;
static hsa_status_t find_coarse(hsa_amd_memory_pool_t p, void *d) {
  (void)d;
  uint32_t f = 0;
  hsa_amd_memory_pool_get_info(p, HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &f);
  if (f == HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED) coarse = p;
  return HSA_STATUS_SUCCESS;
}
static hsa_status_t find_cpu(hsa_agent_t a, void *d) {
  (void)d;
  uint32_t t = 1;
  hsa_agent_get_info(a, HSA_AGENT_INFO_DEVICE, &t);
  if (t == HSA_DEVICE_TYPE_CPU) hsa_amd_agent_iterate_memory_pools(a, find_coarse, NULL);
  return HSA_STATUS_SUCCESS;
}

hsa_status_t hsa_amd_memory_pool_allocate(hsa_amd_memory_pool_t pool, size_t size, uint32_t flags, void **ptr) {
  hsa_status_t (*real)(hsa_amd_memory_pool_t, size_t, uint32_t, void **) =
      (hsa_status_t(*)(hsa_amd_memory_pool_t, size_t, uint32_t, void **))dlsym(RTLD_NEXT, "hsa_amd_memory_pool_allocate");
  uint32_t f = 0, loc = 1;
  hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &f);
  hsa_amd_memory_pool_get_info(pool, HSA_AMD_MEMORY_POOL_INFO_LOCATION, &loc);
  if (!coarse.handle) hsa_iterate_agents(find_cpu, NULL);
  if ((f & HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED) && loc == HSA_AMD_MEMORY_POOL_LOCATION_CPU && coarse.handle)
    pool = coarse;
  return real(pool, size, flags, ptr);
}

int preload_hipmalloc_calls;
hipError_t hipMalloc(void **ptr, size_t size) {
  hipError_t (*real)(void **, size_t) = (hipError_t(*)(void **, size_t))dlsym(RTLD_NEXT, "hipMalloc");
  fprintf(stderr, "rewrite_preload: hipMalloc\n");
  return real(ptr, size);
}
