/*
 * AMD's builds of libamdhip64 (scripts/simgpu-build 6.4-amd, 7.2-amd, with
 * -DSIMGPU_ROCPROFILER_REGISTER): the exported HIP functions dispatch through
 * the HIP API table, which the runtime hands to rocprofiler-register the first
 * time it is needed. Debian's builds (the default ones) do not link
 * rocprofiler-register, and this file is then empty.
 *
 * Sources, ROCm/clr at commit f9f995c6d0ae (October 2024, after rocm-6.2.2):
 * - hipamd/src/hip_table_interface.cpp: every exported function is
 *   `return hip::GetHipDispatchTable()->hipMalloc_fn(ptr, size);`;
 * - hipamd/src/hip_api_trace.cpp: GetHipDispatchTable() is a function-local
 *   static, built on first use (the first HIP call of that copy):
 *   UpdateDispatchTable fills every entry with the implementation, then
 *   ToolInit calls rocprofiler_register_library_api_table("hip",
 *   &rocprofiler_register_import_hip, HIP_ROCP_REG_VERSION, {&table}, 1, &id)
 *   and ignores its result; HIP_ROCP_REG_VERSION is
 *   ROCPROFILER_REGISTER_COMPUTE_VERSION_3(HIP_VERSION_MAJOR, HIP_VERSION_MINOR, 0)
 *   = 10000 * major + 100 * minor (hipamd/src/CMakeLists.txt);
 * - the table's layout: `size_t size` and then the function pointers, whose
 *   positions are frozen by HIP_ENFORCE_ABI (hipFree_fn 90, hipGetErrorName_fn
 *   107, hipMalloc_fn 215; offset = 8 + 8 * position; 463 entries at that
 *   commit, HIP_ENFORCE_ABI_VERSIONING).
 * Modelled: hipMalloc, hipFree and hipGetErrorName go through the table (the
 * functions the loading tests and rocm-fix's table route call; hipGetErrorName
 * initialises nothing, hip_error.cpp); every other function runs directly,
 * as if its entry were never replaced. rocprofiler_register_import_hip is
 * hidden, as the real version script (hipamd/src/hip_hcc.map.in, `local: *`)
 * hides it.
 */
#include "hip_internal.h"

#ifdef SIMGPU_ROCPROFILER_REGISTER
#include <pthread.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#define HIP_FREE_FN 90
#define HIP_GET_ERROR_NAME_FN 107
#define HIP_MALLOC_FN 215
#define TABLE_FUNCTIONS 463

struct hip_dispatch_table {
  size_t size;
  void *fn[TABLE_FUNCTIONS];
};
_Static_assert(offsetof(struct hip_dispatch_table, fn) == 8, "ComputeTableOffset(0)");

typedef struct {
  uint64_t handle;
} register_id_t;
int rocprofiler_register_library_api_table(const char *name, uint32_t (*import)(void), uint32_t version,
                                           void **tables, uint64_t ntables, register_id_t *id);

static struct hip_dispatch_table table;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

HIDDEN uint32_t rocprofiler_register_import_hip(void) {
  return 10000 * (SIMGPU_ROCM_VERSION_DEFAULT / 100) + 100 * (SIMGPU_ROCM_VERSION_DEFAULT % 100);
}

static void build_table(void) {
  table.size = sizeof table;
  table.fn[HIP_FREE_FN] = (void *)hipFree_impl;
  table.fn[HIP_MALLOC_FN] = (void *)hipMalloc_impl;
  table.fn[HIP_GET_ERROR_NAME_FN] = (void *)hipGetErrorName_impl;
  void *tables[1] = {&table};
  register_id_t id = {0};
  (void)rocprofiler_register_library_api_table("hip", rocprofiler_register_import_hip,
                                               rocprofiler_register_import_hip(), tables, 1, &id);
}

static struct hip_dispatch_table *dispatch(void) {
  pthread_once(&table_once, build_table);
  return &table;
}

EXPORT hipError_t hipMalloc(void **ptr, size_t size) {
  return ((hipError_t(*)(void **, size_t))dispatch()->fn[HIP_MALLOC_FN])(ptr, size);
}

EXPORT hipError_t hipFree(void *ptr) {
  return ((hipError_t(*)(void *))dispatch()->fn[HIP_FREE_FN])(ptr);
}
#endif
#ifdef SIMGPU_ROCPROFILER_REGISTER
EXPORT const char *hipGetErrorName(hipError_t error) {
  return ((const char *(*)(hipError_t))dispatch()->fn[HIP_GET_ERROR_NAME_FN])(error);
}
#endif
