/* A matrix of HIP calls against the REAL ROCm runtime from Debian (5.2,
 * libamdhip64.so.5 on this machine; 6.4.3 and 7.2.4 in the chroots of
 * scripts/test-real-rocm): every result is printed, so that runs with and
 * without the preload can be compared line by line. Built with that
 * version's own headers. On a machine without an AMD GPU the runtime answers
 * with its own errors; what matters is that the answers are the same.
 * On stderr (not compared): how many calls went to functions rocm-fix hooks,
 * and what rocm-fix's C API counted, when it is loaded. */
#define __HIP_PLATFORM_AMD__ 1
#include <dlfcn.h>
#include <hip/hip_runtime_api.h>
#include <hip/hip_version.h>
#include <stdio.h>
#include "rocm_fix.h"

#define SHOW(call) printf("%-60s -> %d\n", #call, (int)(call))
/* A call to a function rocm-fix hooks. */
static unsigned hooked;
#define HOOKED(call) (hooked++, (call))

int main(void) {
  void *p = NULL, *q = NULL;
  int n = -1, d = -1, v = -1;
  SHOW(hipInit(0));
  SHOW(hipInit(7));
  SHOW(hipGetDeviceCount(&n));
  printf("count %d\n", n);
  SHOW(hipGetDeviceCount(NULL));
  SHOW(hipSetDevice(0));
  SHOW(hipGetDevice(&d));
  SHOW(hipRuntimeGetVersion(&v));
  printf("version %d\n", v);
  SHOW(HOOKED(hipMalloc(&p, 1 << 20)));
  SHOW(HOOKED(hipMalloc(&p, 0)));
  SHOW(HOOKED(hipMalloc(NULL, 64)));
  SHOW(HOOKED(hipFree(NULL)));
  SHOW(HOOKED(hipFree((void *)0x1000)));
  SHOW(HOOKED(hipHostMalloc(&q, 4096, 0)));
  SHOW(HOOKED(hipHostMalloc(&q, 4096, hipHostMallocNonCoherent)));
  SHOW(HOOKED(hipHostMalloc(&q, 4096, hipHostMallocCoherent | hipHostMallocNonCoherent)));
  SHOW(HOOKED(hipHostAlloc(&q, 4096, 0)));
  SHOW(HOOKED(hipHostFree(NULL)));
  SHOW(HOOKED(hipFreeHost(NULL)));
  SHOW(HOOKED(hipMallocManaged(&p, 4096, hipMemAttachGlobal)));
  SHOW(HOOKED(hipMallocManaged(&p, 4096, 0x77)));
  SHOW(HOOKED(hipExtMallocWithFlags(&p, 4096, hipDeviceMallocFinegrained)));
  SHOW(HOOKED(hipExtMallocWithFlags(&p, 4096, 9)));
  SHOW(HOOKED(hipMemAdvise((void *)0x1000, 4096, hipMemAdviseUnsetCoarseGrain, 0)));
  SHOW(HOOKED(hipMemAdvise(NULL, 4096, hipMemAdviseSetCoarseGrain, 0)));
  SHOW(hipDeviceSynchronize());
  SHOW(hipGetLastError());
  printf("%s\n", hipGetErrorString(hipErrorOutOfMemory));
#if HIP_VERSION_MAJOR >= 6
  /* The last-error state around failing hooked calls (HIP 6 stores every
   * result, HIP 7 only errors): rocm-fix's own calls must leave it alone. */
  SHOW(HOOKED(hipMalloc(&p, 4096)));
  SHOW(hipPeekAtLastError());
  SHOW(hipGetLastError());
  SHOW(hipGetLastError());
  SHOW(HOOKED(hipHostMalloc(&q, 4096, 0)));
  SHOW(hipExtGetLastError());
  SHOW(hipGetLastError());
  SHOW(hipGetDeviceCount(&n));
  SHOW(HOOKED(hipFree(NULL)));
  SHOW(hipGetLastError());
  /* hipGetProcAddress, each flag and version clr accepts; the function it
   * hands back is called (a hooked call when the lookup succeeds). */
  static const int versions[] = {0, 600, 602, 700, 9999, -1};
  static const unsigned long long flags[] = {0, 1, 2, 4, 8};
  for (unsigned vi = 0; vi < sizeof versions / sizeof *versions; vi++)
    for (unsigned fi = 0; fi < sizeof flags / sizeof *flags; fi++) {
      void *fn = NULL;
      hipDriverProcAddressQueryResult st = (hipDriverProcAddressQueryResult)-7;
      int r = hipGetProcAddress("hipMalloc", &fn, versions[vi], flags[fi], &st);
      printf("hipGetProcAddress(hipMalloc, %d, %llu) -> %d status %d found %d", versions[vi], flags[fi], r, (int)st, fn != NULL);
      if (r == 0 && fn) printf(" call -> %d", HOOKED(((hipError_t(*)(void **, size_t))fn)(&p, 64)));
      printf("\n");
    }
  void *fn = NULL;
  SHOW(hipGetProcAddress("hipNoSuchFunction", &fn, 600, 0, NULL));
  SHOW(hipGetProcAddress(NULL, &fn, 600, 0, NULL));
#endif
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  fprintf(stderr, "real_matrix: hooked calls %u\n", hooked);
  if (get) {
    struct rocm_fix_stats s;
    get(&s, sizeof s);
    fprintf(stderr, "real_matrix: rocm_fix_get_stats intercepted %llu rewritten %llu padded %llu\n",
            (unsigned long long)s.intercepted, (unsigned long long)s.rewritten, (unsigned long long)s.padded);
  }
  return 0;
}
