/* A client that binds without the dynamic linker, like ctypes or AMD's
 * hip-python: dlopen("libamdhip64.so", RTLD_LOCAL) and dlsym for every
 * function. Allocates coherent host memory (hipHostMalloc default flags)
 * and launches a kernel on it; then over-reads a 2 MiB hipMalloc buffer (a
 * PyTorch-sized segment, which ends at a block end) by argv[1] bytes. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "simgpu.h"

int main(int argc, char **argv) {
  size_t over = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
  void *h = dlopen("libamdhip64.so", RTLD_NOW | RTLD_LOCAL);
  if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
  hipError_t (*host_malloc)(void **, size_t, unsigned) = (hipError_t(*)(void **, size_t, unsigned))dlsym(h, "hipHostMalloc");
  hipError_t (*malloc_)(void **, size_t) = (hipError_t(*)(void **, size_t))dlsym(h, "hipMalloc");
  hipError_t (*read_)(const void *, size_t, size_t) = (hipError_t(*)(const void *, size_t, size_t))dlsym(h, "simgpuLaunchRead");
  if (!host_malloc || !malloc_ || !read_) { fprintf(stderr, "dlsym failed\n"); return 2; }
  void *p = NULL, *d = NULL;
  printf("hipHostMalloc %d\n", host_malloc(&p, 4096, 0));
  printf("read %d\n", read_(p, 0, 4096));
  printf("hipMalloc %d\n", malloc_(&d, 0x200000));
  printf("over-read %d\n", read_(d, 0, 0x200000 + over));
  return 0;
}
