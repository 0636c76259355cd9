/* hipMalloc+hipFree pairs for scripts/bench: `bench_alloc PAIRS THREADS`.
 * Prints the wall-clock throughput (pairs per second over all threads). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "simgpu.h"

static long pairs;

static void *work(void *arg) {
  (void)arg;
  for (long i = 0; i < pairs; i++) {
    void *p = NULL;
    if (hipMalloc(&p, 4096) != hipSuccess || hipFree(p) != hipSuccess) abort();
  }
  return NULL;
}

int main(int argc, char **argv) {
  pairs = argc > 1 ? atol(argv[1]) : 1000;
  int threads = argc > 2 ? atoi(argv[2]) : 1;
  void *warm = NULL;
  hipMalloc(&warm, 4096); /* runtime and rocm-fix initialisation, outside the loop */
  hipFree(warm);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  pthread_t t[64];
  for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, work, NULL);
  for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.0f pairs/s\n", (double)pairs * threads / s);
  return 0;
}
