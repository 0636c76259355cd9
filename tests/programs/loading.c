/* The ways HIP gets loaded and bound (issue 11), one per argv[1]; each step
 * allocates 2 MiB with hipMalloc (a PyTorch-sized segment, which ends at its
 * block's end, so rocm-fix protects it) and prints its result and how many
 * allocations rocm-fix padded meanwhile (its C API, when it is loaded). Built
 * twice: -DLINKED (linked against the system libamdhip64) and plain (no
 * HIP at link time). argv[2] is the torch/lib-like folder holding a private
 * copy of the runtime and libloading_fw.so (RPATH $ORIGIN). Each copy of the
 * simulated runtime opens SIMGPU_CALL_LOG on its first logged call: the
 * program points it at $LOG_SYS before the system copy's first call and at
 * $LOG_PRIV before the private copy's, so each copy logs to its own file.
 *   linked     the executable's own PLT
 *   free       the same, then hipFree of it: how many allocations rocm-fix
 *              still tracks
 *   local      dlopen(soname, RTLD_LOCAL) + dlsym
 *   global     dlopen(soname, RTLD_GLOBAL) + dlsym
 *   deepbind   dlopen(soname, RTLD_DEEPBIND) + dlsym; then the framework
 *              opened with RTLD_DEEPBIND (its PLT binds its own scope first)
 *   dlvsym     dlopen(soname, RTLD_LOCAL) + dlvsym(hipMalloc, hip_4.2); a
 *              version the runtime lacks; a function rocm-fix does not hook
 *   dlvdefault dlvsym(RTLD_DEFAULT / RTLD_NEXT, hipMalloc, hip_4.2) from the
 *              executable; a version the runtime lacks
 *   getproc    hipGetProcAddress, each flag and version argument
 *   twocopies  linked to the system copy; the private copy opened by path
 *              (as torch's _load_global_deps does) and used through dlsym
 *              and dlvsym on its handle; the framework loaded next
 *   therock    nothing linked; the private copy preloaded by path with
 *              RTLD_GLOBAL (a TheRock package's init), then the framework */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rocm_fix.h"

typedef int (*malloc_t)(void **, size_t);
typedef int (*getproc_t)(const char *, void **, int, uint64_t, int *);
#ifdef LINKED
extern int hipMalloc(void **, size_t);
extern int hipFree(void *);
extern int hipGetDeviceCount(int *);
#endif

static uint64_t padded(void) {
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  struct rocm_fix_stats s = {0};
  if (get) get(&s, sizeof s);
  return s.padded;
}

static void *last;

static void step(const char *name, malloc_t f) {
  void *p = NULL;
  uint64_t before = padded();
  int r = f ? f(&p, 2 << 20) : -1;
  last = p;
  printf("%s: hipMalloc -> %d padded +%llu\n", name, r, (unsigned long long)(padded() - before));
}

static __attribute__((unused)) uint64_t live(void) {
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  struct rocm_fix_stats s = {0};
  if (get) get(&s, sizeof s);
  return s.live_allocations;
}

static void use_log(const char *var) {
  const char *v = getenv(var);
  if (v) setenv("SIMGPU_CALL_LOG", v, 1);
}

static void *open_or_die(const char *path, int mode) {
  void *h = dlopen(path, mode);
  if (!h) { fprintf(stderr, "dlopen %s: %s\n", path, dlerror()); exit(2); }
  return h;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *mode = argv[1];
  char soname[64], priv[4096], fw[4096];
  snprintf(soname, sizeof soname, "libamdhip64.so.%s", getenv("HIP_SOVERSION") ? getenv("HIP_SOVERSION") : "6");
  snprintf(priv, sizeof priv, "%s/%s", argv[2], soname);
  snprintf(fw, sizeof fw, "%s/libloading_fw.so", argv[2]);
  use_log("LOG_SYS");
  if (!strcmp(mode, "local") || !strcmp(mode, "global") || !strcmp(mode, "dlvsym")) {
    void *h = open_or_die(soname, RTLD_NOW | (!strcmp(mode, "global") ? RTLD_GLOBAL : RTLD_LOCAL));
    malloc_t f = !strcmp(mode, "dlvsym") ? (malloc_t)dlvsym(h, "hipMalloc", "hip_4.2") : (malloc_t)dlsym(h, "hipMalloc");
    step(mode, f);
    if (!strcmp(mode, "dlvsym")) {
      printf("dlvsym hip_0.0: %s\n", dlvsym(h, "hipMalloc", "hip_0.0") ? "found" : "null");
      void *count = dlvsym(h, "hipGetDeviceCount", "hip_4.2");
      printf("dlvsym hipGetDeviceCount: %s\n",
             count && count == dlsym(h, "hipGetDeviceCount") ? "the runtime's" : "other");
    }
  } else if (!strcmp(mode, "deepbind")) {
    void *h = open_or_die(soname, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    step("deepbind dlsym", (malloc_t)dlsym(h, "hipMalloc"));
    void *f = open_or_die(fw, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    step("deepbind framework", (malloc_t)dlsym(f, "fw_alloc"));
  } else if (!strcmp(mode, "getproc")) {
    void *h = open_or_die(soname, RTLD_NOW | RTLD_LOCAL);
    getproc_t gp = (getproc_t)dlsym(h, "hipGetProcAddress");
    static const int versions[] = {0, 600, 602, 700};
    static const uint64_t flags[] = {0, 1, 2};
    for (unsigned v = 0; v < 4; v++)
      for (unsigned f = 0; f < 3; f++) {
        void *fn = NULL;
        int st = -7;
        int r = gp ? gp("hipMalloc", &fn, versions[v], flags[f], &st) : -1;
        char name[64];
        snprintf(name, sizeof name, "getproc %d/%llu (%d, status %d)", versions[v], (unsigned long long)flags[f], r, st);
        step(name, r == 0 ? (malloc_t)fn : NULL);
      }
#ifdef LINKED
  } else if (!strcmp(mode, "linked")) {
    step("linked", hipMalloc);
  } else if (!strcmp(mode, "free")) {
    step("free", hipMalloc);
    uint64_t tracked = live();
    int r = hipFree(last);
    printf("free: hipFree -> %d, tracked %llu -> %llu\n", r, (unsigned long long)tracked, (unsigned long long)live());
  } else if (!strcmp(mode, "dlvdefault")) {
    step("dlvsym RTLD_DEFAULT", (malloc_t)dlvsym(RTLD_DEFAULT, "hipMalloc", "hip_4.2"));
    step("dlvsym RTLD_NEXT", (malloc_t)dlvsym(RTLD_NEXT, "hipMalloc", "hip_4.2"));
    printf("dlvsym RTLD_DEFAULT hip_0.0: %s\n", dlvsym(RTLD_DEFAULT, "hipMalloc", "hip_0.0") ? "found" : "null");
  } else if (!strcmp(mode, "twocopies")) {
    int n = 0;
    hipGetDeviceCount(&n); /* the system copy opens its log */
    step("system copy (linked)", hipMalloc);
    use_log("LOG_PRIV");
    void *h = open_or_die(priv, RTLD_NOW | RTLD_LOCAL);
    printf("two copies: %s\n", h != dlopen(soname, RTLD_NOW | RTLD_NOLOAD) ? "yes" : "no");
    step("private copy (dlsym on its handle)", (malloc_t)dlsym(h, "hipMalloc"));
    step("private copy (dlvsym on its handle)", (malloc_t)dlvsym(h, "hipMalloc", "hip_4.2"));
    void *f = open_or_die(fw, RTLD_NOW | RTLD_LOCAL);
    step("framework (RPATH $ORIGIN)", (malloc_t)dlsym(f, "fw_alloc"));
#endif
  } else if (!strcmp(mode, "therock")) {
    use_log("LOG_PRIV");
    open_or_die(priv, RTLD_NOW | RTLD_GLOBAL);
    void *f = open_or_die(fw, RTLD_NOW | RTLD_LOCAL);
    step("therock framework", (malloc_t)dlsym(f, "fw_alloc"));
  } else {
    return 2;
  }
  return 0;
}
