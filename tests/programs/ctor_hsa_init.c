/* A library whose constructor makes an HSA call: constructors run under
 * glibc's loader lock, inside the dlopen that loads them
 * (tests/programs/loader_lock_race.c). */
#include <stdio.h>
unsigned hsa_init(void);
__attribute__((constructor)) static void init(void) {
  printf("ctor: hsa_init -> %u\n", hsa_init());
  fflush(stdout);
}
