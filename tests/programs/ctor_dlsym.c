/* A library whose constructor looks hipMalloc up on a handle (dlsym on the
 * program's handle): constructors run under glibc's loader lock, and
 * without rocm-fix this makes no HIP call at all (tests/loading.rs). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
__attribute__((constructor)) static void init(void) {
  void *h = dlopen(NULL, RTLD_NOW);
  void *f = h ? dlsym(h, "hipMalloc") : NULL;
  printf("ctor: dlsym hipMalloc -> %s\n", f ? "found" : "none");
  fflush(stdout);
}
