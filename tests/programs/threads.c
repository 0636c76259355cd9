/* 32 threads allocating, launching and freeing at once: the simulated
 * runtime must be thread-safe as the real one is. Prints "ok N" at the end. */
#include <pthread.h>
#include <stdio.h>
#include "simgpu.h"

#define THREADS 32
#define ROUNDS 300
static int errors;

static void *work(void *arg) {
  (void)arg;
  for (int i = 0; i < ROUNDS; i++) {
    void *p = NULL, *h = NULL;
    if (hipMalloc(&p, 4096 + (size_t)i * 64) != hipSuccess) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
    if (hipHostMalloc(&h, 256, hipHostMallocNonCoherent) != hipSuccess) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
    if (simgpuLaunchWrite(p, 0, 4096) != hipSuccess) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
    if (hipFree(p) != hipSuccess || hipHostFree(h) != hipSuccess) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

int main(void) {
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, work, NULL);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  /* Everything was freed: the whole VRAM is available again in one piece. */
  size_t total = 0;
  hipDeviceProp_tR0600 prop;
  hipGetDevicePropertiesR0600(&prop, 0);
  total = prop.totalGlobalMem;
  void *all = NULL;
  hipError_t e = hipMalloc(&all, total);
  printf("errors %d whole-vram %d\n", errors, e);
  return errors || e;
}
