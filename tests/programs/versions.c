/*
 * Linked against one build of the simulated device (5.2, 6.4 or 7.2): prints
 * what differs between releases, one "key value" line each, and exercises what
 * a hipcc-built program does before its first launch. Functions that only
 * some releases export are looked up with dlsym.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "simgpu.h"

hipError_t hipInit(unsigned);
hipError_t hipSetDevice(int);
hipError_t hipGetDevice(int *);
hipError_t hipGetLastError(void);
hipError_t hipPeekAtLastError(void);
hipError_t hipRuntimeGetVersion(int *);
hipError_t hipDriverGetVersion(int *);
const char *hipGetErrorName(hipError_t);
hipError_t hipProfilerStart(void);
hipError_t hipStreamCreate(hipStream_t *);
hipError_t hipStreamSynchronize(hipStream_t);
hipError_t hipStreamDestroy(hipStream_t);
hipError_t hipEventCreate(hipEvent_t *);
hipError_t hipEventRecord(hipEvent_t, hipStream_t);
hipError_t hipEventSynchronize(hipEvent_t);
hipError_t hipEventElapsedTime(float *, hipEvent_t, hipEvent_t);
hipError_t hipEventDestroy(hipEvent_t);
hipError_t hipDeviceGetAttribute(int *, int, int);
void **__hipRegisterFatBinary(const void *);
void __hipRegisterFunction(void **, const void *, char *, const char *, unsigned, void *, void *, void *, void *, int *);
void __hipUnregisterFatBinary(void **);
hipError_t hipLaunchKernel(const void *, dim3, dim3, void **, size_t, hipStream_t);
hipError_t hipModuleLoadData(hipModule_t *, const void *);
hipError_t hipModuleGetFunction(hipFunction_t *, hipModule_t, const char *);
hipError_t hipMalloc(void **, size_t);
hipError_t hipFree(void *);

static void kernel_stub(void) {}
static void unregistered_stub(void) {}

int main(void) {
  int v = 0, d = 0;
  hipError_t e;
  printf("init %d\n", hipInit(0));
  e = hipRuntimeGetVersion(&v);
  printf("runtime %d %d\n", e, v);
  e = hipDriverGetVersion(&v);
  printf("driver %d %d\n", e, v);

  /* hipGetLastError after a failure followed by a success. */
  hipSetDevice(99);
  hipGetDevice(&d);
  printf("last-after-success %d\n", hipGetLastError());
  hipError_t (*ext)(void) = (hipError_t(*)(void))dlsym(RTLD_DEFAULT, "hipExtGetLastError");
  if (ext) {
    hipSetDevice(99);
    hipError_t a = ext();
    hipError_t b = hipGetLastError();
    printf("ext-then-last %d %d\n", a, b);
    hipSetDevice(99);
    hipGetDevice(&d);
    printf("ext-after-success %d\n", ext());
    hipGetLastError();
  } else {
    printf("ext absent\n");
  }

  hipError_t (*gpa)(const char *, void **, int, uint64_t, int *) =
      (hipError_t(*)(const char *, void **, int, uint64_t, int *))dlsym(RTLD_DEFAULT, "hipGetProcAddress");
  if (gpa) {
    void *fn = NULL;
    int status = -1;
    hipError_t e = gpa("hipMalloc", &fn, 600, 0, &status);
    /* "same": the function this process's own libamdhip64 defines. */
    printf("procaddress %d %d %d same %d\n", e, status, fn != NULL, fn && fn == dlsym(RTLD_DEFAULT, "hipMalloc"));
  } else {
    printf("procaddress absent\n");
  }

  /* A stub. */
  e = hipProfilerStart();
  printf("stub %d %s\n", e, hipGetErrorName(e));

  /* Streams and events. */
  hipStream_t s = NULL;
  hipEvent_t a = NULL, b = NULL;
  float ms = -1;
  int ok = hipStreamCreate(&s) == hipSuccess && hipEventCreate(&a) == hipSuccess && hipEventCreate(&b) == hipSuccess &&
           hipEventRecord(a, s) == hipSuccess && hipEventRecord(b, s) == hipSuccess &&
           hipEventSynchronize(b) == hipSuccess && hipEventElapsedTime(&ms, a, b) == hipSuccess && ms >= 0 &&
           hipStreamSynchronize(s) == hipSuccess && hipEventDestroy(a) == hipSuccess &&
           hipEventDestroy(b) == hipSuccess && hipStreamDestroy(s) == hipSuccess;
  printf("streams-events %d\n", ok);
  int warp = 0, vmm = -1;
  hipDeviceGetAttribute(&warp, hipDeviceAttributeWarpSize, 0);
  e = hipDeviceGetAttribute(&vmm, hipDeviceAttributeVirtualMemoryManagementSupported, 0);
  printf("warp %d vmm %d %d\n", warp, e, vmm);

  /* What hipcc's generated host code does: register, then launch. */
  static const char wrapper[16];
  void **module = __hipRegisterFatBinary(wrapper);
  __hipRegisterFunction(module, (const void *)kernel_stub, (char *)"kernel", "kernel", (unsigned)-1, NULL, NULL, NULL,
                        NULL, NULL);
  dim3 g = {1, 1, 1}, blk = {64, 1, 1};
  printf("launch %d\n", hipLaunchKernel((const void *)kernel_stub, g, blk, NULL, 0, NULL));
  printf("launch-unregistered %d\n", hipLaunchKernel((const void *)unregistered_stub, g, blk, NULL, 0, NULL));
  __hipUnregisterFatBinary(module);
  hipModule_t m = NULL;
  hipFunction_t f = NULL;
  printf("module-elf %d\n", hipModuleLoadData(&m, "\177ELF\2\1\1"));
  printf("module-junk %d\n", hipModuleLoadData(&m, "not a code object"));
  printf("module-function %d\n", hipModuleGetFunction(&f, m, "kernel"));
  void *p = NULL;
  printf("malloc %d\n", hipMalloc(&p, 4096));
  printf("free %d\n", hipFree(p));
  return 0;
}
