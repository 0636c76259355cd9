/* The API-table route's race (AMD's builds; src/preload/src/apitable.rs):
 * thread A makes the first HIP call, so the runtime builds its table and
 * hands it to rocm-fix's receiver, which takes entries over; thread B makes
 * its first hooked call (hipMalloc) while that is under way, which loads
 * rocm-fix's engine. libslow_dladdr.so (slow_dladdr.c) slows the receiver's
 * dladdr calls on thread A down and tells B when A is inside them. Each
 * hipMalloc must run once and succeed; before the fix B's engine kept the
 * exported hipMalloc as its real function, and hipMalloc looped through the
 * table back into the engine until the stack overflowed. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int hipMalloc(void **p, size_t n);
int hipFree(void *p);
const char *hipGetErrorName(int);
void slow_mark(void);
int slow_entered(void);

static void *first_hip_call(void *x) {
  (void)x;
  slow_mark();
  /* A function rocm-fix does not hook: the runtime builds and registers its table here. */
  printf("A: %s\n", hipGetErrorName(0));
  return NULL;
}

int main(void) {
  pthread_t a;
  pthread_create(&a, NULL, first_hip_call, NULL);
  /* Without a preload there is no receiver, and nothing to wait for. */
  for (int i = 0; i < 500 && getenv("LD_PRELOAD") && !slow_entered(); i++) usleep(10000);
  printf("B: A inside the receiver: %s\n", slow_entered() ? "yes" : "no");
  for (int i = 0; i < 3; i++) {
    void *p = NULL;
    int r = hipMalloc(&p, 2 << 20);
    printf("B: hipMalloc %d -> %d\n", i, r);
    fflush(stdout);
    hipFree(p);
  }
  pthread_join(a, NULL);
  return 0;
}
