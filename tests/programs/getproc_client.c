/* A client that binds through hipGetProcAddress (ROCm 6.2+), which looks
 * symbols up past any preload. Same workload as dlclient.c. */
#include <stdio.h>
#include <stdlib.h>
#include "simgpu.h"

int main(int argc, char **argv) {
  size_t over = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
  void *hm = NULL, *m = NULL;
  int st = -1;
  if (hipGetProcAddress("hipHostMalloc", &hm, 600, 0, &st) || hipGetProcAddress("hipMalloc", &m, 600, 0, &st)) {
    fprintf(stderr, "hipGetProcAddress failed\n");
    return 2;
  }
  void *p = NULL, *d = NULL;
  printf("hipHostMalloc %d\n", ((hipError_t(*)(void **, size_t, unsigned))hm)(&p, 4096, 0));
  printf("read %d\n", simgpuLaunchRead(p, 0, 4096));
  printf("hipMalloc %d\n", ((hipError_t(*)(void **, size_t))m)(&d, 0x200000));
  printf("over-read %d\n", simgpuLaunchRead(d, 0, 0x200000 + over));
  return 0;
}
