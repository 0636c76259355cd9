/* hipGetProcAddress (6.x): looks the symbol up on a dlopen("libamdhip64.so")
 * handle. Prints whether the pointer it returns is the library's own
 * hipMalloc and calls it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include "simgpu.h"

int main(void) {
  void *fn = NULL;
  int status = -1;
  hipError_t e = hipGetProcAddress("hipMalloc", &fn, 600, 0, &status);
  void *lib = dlopen("libamdhip64.so.6", RTLD_NOW | RTLD_NOLOAD);
  void *own = lib ? dlsym(lib, "hipMalloc") : NULL;
  printf("getproc %d status %d same-as-library %d\n", e, status, fn && fn == own);
  void *missing = (void *)1;
  e = hipGetProcAddress("hipNoSuchFunction", &missing, 600, 0, &status);
  printf("missing %d status %d null %d\n", e, status, missing == NULL);
  void *props = NULL;
  hipGetProcAddress("hipGetDeviceProperties", &props, 600, 0, &status);
  printf("props-maps-to-R0600 %d\n", props && props == dlsym(lib, "hipGetDevicePropertiesR0600"));
  if (fn) {
    void *p = NULL;
    e = ((hipError_t(*)(void **, size_t))fn)(&p, 4096);
    printf("call %d\n", e);
  }
  return 0;
}
