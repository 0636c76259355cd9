/* A matrix of HIP calls against the REAL ROCm runtime from Debian (5.2,
 * libamdhip64.so.5): every result is printed, so that runs with and without
 * the preload can be compared line by line. Built with Debian's own
 * headers. On a machine without an AMD GPU the runtime answers with its own
 * errors; what matters is that the answers are the same. */
#define __HIP_PLATFORM_AMD__ 1
#include <hip/hip_runtime_api.h>
#include <stdio.h>

#define SHOW(call) printf("%-60s -> %d\n", #call, (int)(call))

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
  SHOW(hipMalloc(&p, 1 << 20));
  SHOW(hipMalloc(&p, 0));
  SHOW(hipMalloc(NULL, 64));
  SHOW(hipFree(NULL));
  SHOW(hipFree((void *)0x1000));
  SHOW(hipHostMalloc(&q, 4096, 0));
  SHOW(hipHostMalloc(&q, 4096, hipHostMallocNonCoherent));
  SHOW(hipHostMalloc(&q, 4096, hipHostMallocCoherent | hipHostMallocNonCoherent));
  SHOW(hipHostAlloc(&q, 4096, 0));
  SHOW(hipHostFree(NULL));
  SHOW(hipFreeHost(NULL));
  SHOW(hipMallocManaged(&p, 4096, hipMemAttachGlobal));
  SHOW(hipMallocManaged(&p, 4096, 0x77));
  SHOW(hipExtMallocWithFlags(&p, 4096, hipDeviceMallocFinegrained));
  SHOW(hipExtMallocWithFlags(&p, 4096, 9));
  SHOW(hipMemAdvise((void *)0x1000, 4096, hipMemAdviseUnsetCoarseGrain, 0));
  SHOW(hipMemAdvise(NULL, 4096, hipMemAdviseSetCoarseGrain, 0));
  SHOW(hipDeviceSynchronize());
  SHOW(hipGetLastError());
  printf("%s\n", hipGetErrorString(hipErrorOutOfMemory));
  return 0;
}
