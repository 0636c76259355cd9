/*
 * What a hipcc-built library does when it is loaded: registers a fat binary
 * (a clang offload bundle whose entries are `hipv4-amdgcn-amd-amdhsa--<id>`
 * for each target id given) and a kernel in it, before or after the
 * runtime's first call ("late"), then makes HIP calls and launches the
 * kernel. Prints one result a line; the entries hold no real code.
 *   fatbin [late] TARGET_ID…     e.g. fatbin gfx1030 gfx906:xnack-
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simgpu.h"

hipError_t hipGetDeviceCount(int *);
void **__hipRegisterFatBinary(const void *);
void __hipRegisterFunction(void **, const void *, char *, const char *, unsigned, void *, void *, void *, void *, int *);
hipError_t hipLaunchKernel(const void *, dim3, dim3, void **, size_t, hipStream_t);

static void kernel_stub(void) {}

/* clang's __CudaFatBinaryWrapper: magic __hipFatMAGIC2, version 1, the bundle. */
static struct { uint32_t magic, version; const void *binary; void *unused; } wrapper = {0x48495046u, 1, NULL, NULL};

static void put64(unsigned char **p, uint64_t v) {
  memcpy(*p, &v, 8);
  *p += 8;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  int late = argc > 1 && !strcmp(argv[1], "late");
  int first = late ? 2 : 1, n = argc - first;
  static unsigned char bundle[8192];
  unsigned char *p = bundle;
  memcpy(p, "__CLANG_OFFLOAD_BUNDLE__", 24);
  p += 24;
  put64(&p, (uint64_t)n + 1);
  /* a host entry (never a device's), then one per target id; each entry's
   * "code object" is 8 bytes at the end */
  const char *host = "host-x86_64-unknown-linux";
  size_t payload = 4096;
  put64(&p, payload);
  put64(&p, 0);
  put64(&p, strlen(host));
  memcpy(p, host, strlen(host));
  p += strlen(host);
  for (int i = 0; i < n; i++) {
    char id[128];
    snprintf(id, sizeof id, "hipv4-amdgcn-amd-amdhsa--%s", argv[first + i]);
    put64(&p, payload + 8 * (uint64_t)i);
    put64(&p, 8);
    put64(&p, strlen(id));
    memcpy(p, id, strlen(id));
    p += strlen(id);
  }
  wrapper.binary = bundle;
  int count = -1;
  hipError_t e;
  if (late) {
    e = hipGetDeviceCount(&count);
    printf("hipGetDeviceCount %d %d\n", e, count);
  }
  void **module = __hipRegisterFatBinary(&wrapper);
  __hipRegisterFunction(module, (const void *)kernel_stub, "kernel", "kernel", 0, NULL, NULL, NULL, NULL, NULL);
  printf("registered\n");
  if (!late) {
    e = hipGetDeviceCount(&count);
    printf("hipGetDeviceCount %d %d\n", e, count);
  }
  dim3 g = {1, 1, 1};
  printf("launch %d\n", hipLaunchKernel((const void *)kernel_stub, g, g, NULL, 0, NULL));
  return 0;
}
