/* An application using "RCCL" (argv[1], a librccl*.so) and allocating
 * the same kinds of memory itself. */
#include <dlfcn.h>
#include <stdio.h>
#include "simgpu.h"

int main(int argc, char **argv) {
  void *lib = dlopen(argc > 1 ? argv[1] : "librccl_fake.so", RTLD_NOW);
  if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 2; }
  int (*alloc)(void **, void **) = (int (*)(void **, void **))dlsym(lib, "rccl_fake_alloc");
  void *h = NULL, *f = NULL, *own_h = NULL, *own_f = NULL;
  int r = alloc(&h, &f);
  r |= hipHostMalloc(&own_h, 4096, hipHostMallocMapped);
  r |= hipExtMallocWithFlags(&own_f, 4096, hipDeviceMallocUncached);
  printf("allocated %d\n", r);
  return r;
}
