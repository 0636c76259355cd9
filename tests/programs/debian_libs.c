/* A client of Debian's own ROCm libraries, built against their real headers
 * (target/debs/libs-<release>, scripts/fetch-rocm-libs) and linked against
 * them: each mode creates a library handle (the library allocates device
 * memory of its own inside), uses it where that needs no kernel of ours,
 * prints every status on stdout, then rocm-fix's counters (when the preload
 * is there) on stderr while the handle is alive, then destroys it.
 *   hipsparse | rocsparse   hipsparseCreate / rocsparse_create_handle
 *   hiprand   | rocrand     create the default generator, generate 4096 uints
 *                           into a buffer of ours, destroy
 *   app SIZE…               the same counters after hipMalloc of SIZE… by
 *                           the program itself (the comparison: what the
 *                           library's own allocations got). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hip/hip_runtime_api.h>
#include <hiprand/hiprand.h>
#include <hipsparse/hipsparse.h>
#include <rocrand/rocrand.h>
#include <rocsparse/rocsparse.h>

#include "rocm_fix.h"

static void stats(const char *when) {
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  if (!get) return;
  struct rocm_fix_stats s;
  memset(&s, 0, sizeof s);
  get(&s, sizeof s);
  fprintf(stderr, "debian_libs: %s: padded %llu padded_bytes %llu live %llu\n", when, (unsigned long long)s.padded,
          (unsigned long long)s.padded_bytes, (unsigned long long)s.live_allocations);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  setvbuf(stdout, NULL, _IONBF, 0); /* an abort must not lose what was printed */
  if (!strcmp(mode, "hipsparse")) {
    hipsparseHandle_t h = NULL;
    printf("hipsparseCreate -> %d\n", (int)hipsparseCreate(&h));
    int v = 0;
    hipsparseStatus_t st = hipsparseGetVersion(h, &v);
    printf("hipsparseGetVersion -> %d version %d\n", (int)st, v);
    stats("handle alive");
    printf("hipsparseDestroy -> %d\n", (int)hipsparseDestroy(h));
  } else if (!strcmp(mode, "rocsparse")) {
    rocsparse_handle h = NULL;
    printf("rocsparse_create_handle -> %d\n", (int)rocsparse_create_handle(&h));
    rocsparse_pointer_mode pm = rocsparse_pointer_mode_device;
    rocsparse_status st = rocsparse_get_pointer_mode(h, &pm);
    printf("rocsparse_get_pointer_mode -> %d mode %d\n", (int)st, (int)pm);
    stats("handle alive");
    printf("rocsparse_destroy_handle -> %d\n", (int)rocsparse_destroy_handle(h));
  } else if (!strcmp(mode, "hiprand") || !strcmp(mode, "rocrand")) {
    unsigned int *out = NULL;
    printf("hipMalloc -> %d\n", (int)hipMalloc((void **)&out, 4096 * sizeof *out));
    if (!strcmp(mode, "hiprand")) {
      hiprandGenerator_t g = NULL;
      printf("hiprandCreateGenerator -> %d\n", (int)hiprandCreateGenerator(&g, HIPRAND_RNG_PSEUDO_DEFAULT));
      printf("hiprandGenerate -> %d\n", (int)hiprandGenerate(g, out, 4096));
      stats("generator alive");
      printf("hiprandDestroyGenerator -> %d\n", (int)hiprandDestroyGenerator(g));
    } else {
      rocrand_generator g = NULL;
      printf("rocrand_create_generator -> %d\n", (int)rocrand_create_generator(&g, ROCRAND_RNG_PSEUDO_DEFAULT));
      printf("rocrand_generate -> %d\n", (int)rocrand_generate(g, out, 4096));
      stats("generator alive");
      printf("rocrand_destroy_generator -> %d\n", (int)rocrand_destroy_generator(g));
    }
    printf("hipFree -> %d\n", (int)hipFree(out));
  } else if (!strcmp(mode, "app")) {
    void *p[16] = {0};
    int n = 0;
    for (int i = 2; i < argc && n < 16; i++, n++)
      printf("hipMalloc -> %d\n", (int)hipMalloc(&p[n], (size_t)strtoull(argv[i], NULL, 0)));
    stats("allocations alive");
    for (int i = 0; i < n; i++) printf("hipFree -> %d\n", (int)hipFree(p[i]));
  } else {
    fprintf(stderr, "usage: debian_libs hipsparse|rocsparse|hiprand|rocrand|app SIZE...\n");
    return 2;
  }
  stats("end");
  return 0;
}
