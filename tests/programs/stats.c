/* The C API (include/rocm_fix.h), found with dlsym so the program also runs
 * without the preload: prints the statistics after a small workload given
 * as in simwork: "host" = hipHostMalloc default flags, "dev" = hipMalloc of
 * 4 KiB, "seg" = hipMalloc of 2 MiB (a PyTorch segment: it ends at its block
 * end), "free" = hipFree of the last one; "cd:DIR" changes directory first (a
 * program that moves before its first HIP call). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "rocm_fix.h"
#include "simgpu.h"

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    void *p = NULL;
    if (!strncmp(argv[i], "cd:", 3)) {
      if (chdir(argv[i] + 3)) { perror("chdir"); return 2; }
    } else if (!strcmp(argv[i], "host")) hipHostMalloc(&p, 4096, 0);
    else if (!strcmp(argv[i], "dev")) hipMalloc(&p, 4096);
    else if (!strcmp(argv[i], "seg")) hipMalloc(&p, 2 << 20);
    else if (!strcmp(argv[i], "free")) hipFree(p);
  }
  int (*get)(struct rocm_fix_stats *, size_t) = (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  if (!get) { printf("no rocm-fix\n"); return 0; }
  struct rocm_fix_stats s;
  memset(&s, 0xff, sizeof s);
  int r = get(&s, sizeof s);
  printf("r=%d intercepted=%llu rewritten=%llu padded=%llu padded_bytes=%llu retried=%llu faults=%llu live=%llu version=%s\n", r,
         (unsigned long long)s.intercepted, (unsigned long long)s.rewritten, (unsigned long long)s.padded,
         (unsigned long long)s.padded_bytes, (unsigned long long)s.retried, (unsigned long long)s.faults,
         (unsigned long long)s.live_allocations, s.version);
  struct rocm_fix_stats small;
  memset(&small, 0xff, sizeof small);
  get(&small, 2 * sizeof(uint64_t));
  printf("partial copy: rewritten field untouched=%d\n", small.padded == ~0ull && small.intercepted == s.intercepted);
  return 0;
}
