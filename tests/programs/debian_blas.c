/* A client of Debian sid's rocBLAS 4.4 / hipBLAS 2.4 / MIOpen 3.4 (ROCm 6.4),
 * built (as C++) against their real headers (target/debs/libs-6.4,
 * scripts/fetch-rocm-libs 6.4) and linked against them: each mode creates a
 * handle (the library allocates its device workspace inside), makes a call
 * that uses it, prints every status on stdout, then rocm-fix's counters (when
 * the preload is there) on stderr while the handle is alive, then destroys it.
 *   rocblas | hipblas   rocblas_create_handle / hipblasCreate, then sdot of
 *                       1024 floats of ours (device memory), result on the host
 *   miopen              miopenCreate (it creates a rocBLAS handle), its stream
 *   app SIZE…           the same counters after hipMalloc of SIZE… by the
 *                       program itself (the comparison). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hip/hip_runtime_api.h>
#include <hipblas/hipblas.h>
#include <miopen/miopen.h>
#include <rocblas/rocblas.h>

#include "rocm_fix.h"

static void stats(const char *when) {
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  if (!get) return;
  struct rocm_fix_stats s;
  memset(&s, 0, sizeof s);
  get(&s, sizeof s);
  fprintf(stderr, "debian_blas: %s: padded %llu padded_bytes %llu live %llu\n", when, (unsigned long long)s.padded,
          (unsigned long long)s.padded_bytes, (unsigned long long)s.live_allocations);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  setvbuf(stdout, NULL, _IONBF, 0); /* an abort must not lose what was printed */
  if (!strcmp(mode, "rocblas") || !strcmp(mode, "hipblas")) {
    float *x = NULL;
    float r = -1;
    hipError_t he = hipMalloc((void **)&x, 1024 * sizeof *x);
    printf("hipMalloc -> %d\n", (int)he);
    if (!strcmp(mode, "rocblas")) {
      rocblas_handle h = NULL;
      rocblas_status st = rocblas_create_handle(&h);
      printf("rocblas_create_handle -> %d\n", (int)st);
      size_t size = 0;
      st = rocblas_get_device_memory_size(h, &size);
      printf("rocblas_get_device_memory_size -> %d size %zu\n", (int)st, size);
      printf("rocblas_is_managing_device_memory -> %d\n", (int)rocblas_is_managing_device_memory(h));
      st = rocblas_sdot(h, 1024, x, 1, x, 1, &r);
      printf("rocblas_sdot -> %d\n", (int)st);
      stats("handle alive");
      printf("rocblas_destroy_handle -> %d\n", (int)rocblas_destroy_handle(h));
    } else {
      hipblasHandle_t h = NULL;
      printf("hipblasCreate -> %d\n", (int)hipblasCreate(&h));
      hipblasStatus_t st = hipblasSdot(h, 1024, x, 1, x, 1, &r);
      printf("hipblasSdot -> %d\n", (int)st);
      stats("handle alive");
      printf("hipblasDestroy -> %d\n", (int)hipblasDestroy(h));
    }
    printf("hipFree -> %d\n", (int)hipFree(x));
  } else if (!strcmp(mode, "miopen")) {
    size_t major = 0, minor = 0, patch = 0;
    miopenStatus_t st = miopenGetVersion(&major, &minor, &patch);
    printf("miopenGetVersion -> %d %zu.%zu.%zu\n", (int)st, major, minor, patch);
    miopenHandle_t h = NULL;
    st = miopenCreate(&h);
    printf("miopenCreate -> %d\n", (int)st);
    hipStream_t s = NULL;
    st = miopenGetStream(h, &s);
    printf("miopenGetStream -> %d\n", (int)st);
    stats("handle alive");
    printf("miopenDestroy -> %d\n", (int)miopenDestroy(h));
  } else if (!strcmp(mode, "app")) {
    void *p[16] = {0};
    int n = 0;
    for (int i = 2; i < argc && n < 16; i++, n++) {
      hipError_t e = hipMalloc(&p[n], (size_t)strtoull(argv[i], NULL, 0));
      printf("hipMalloc -> %d\n", (int)e);
    }
    stats("allocations alive");
    for (int i = 0; i < n; i++) printf("hipFree -> %d\n", (int)hipFree(p[i]));
  } else {
    fprintf(stderr, "usage: debian_blas rocblas|hipblas|miopen|app SIZE...\n");
    return 2;
  }
  stats("end");
  return 0;
}
