/* The API-table takeover against the loader's lock (AMD's builds;
 * src/preload/src/apitable.rs): thread A makes the first HIP call, so the
 * runtime hands its table to rocm-fix's receiver (slowed down by
 * libslow_dladdr.so); meanwhile the main thread dlopens a library whose
 * constructor calls hsa_init, which loads rocm-fix's engine while the main
 * thread holds glibc's loader lock. The receiver's lookups need that lock:
 * nothing of rocm-fix's may make the main thread wait for A then. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
const char *hipGetErrorName(int);
void slow_mark(void);
int slow_entered(void);

static void *first_hip_call(void *x) {
  (void)x;
  slow_mark();
  printf("A: %s\n", hipGetErrorName(0));
  fflush(stdout);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  pthread_t a;
  pthread_create(&a, NULL, first_hip_call, NULL);
  /* Without a preload there is no receiver, and nothing to wait for. */
  for (int i = 0; i < 500 && getenv("LD_PRELOAD") && !slow_entered(); i++) usleep(10000);
  printf("main: A inside the receiver: %s\n", slow_entered() ? "yes" : "no");
  fflush(stdout);
  void *h = dlopen(argv[1], RTLD_NOW);
  printf("main: dlopen %s\n", h ? "ok" : dlerror());
  fflush(stdout);
  pthread_join(a, NULL);
  return 0;
}
