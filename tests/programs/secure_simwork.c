/* simwork, built to run set-user-ID root (tests/secure.rs): prints whether
 * the kernel put it in secure-execution mode (AT_SECURE), then runs the
 * steps. Linked with an absolute RPATH, since LD_LIBRARY_PATH is ignored in
 * secure mode. */
#include <sys/auxv.h>
#define main simwork_main
#include "simwork.c"
#undef main

int main(int argc, char **argv) {
  printf("secure=%lu\n", getauxval(AT_SECURE));
  fflush(stdout);
  return simwork_main(argc, argv);
}
