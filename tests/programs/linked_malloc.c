/* A program linked against libamdhip64: hipMalloc(argv[1] bytes), then
 * hipFree; prints both results. The linked client the Python clients'
 * allocations are compared with (tests/clients.rs). */
#include <stdio.h>
#include <stdlib.h>

#include "simgpu.h"

int main(int argc, char **argv) {
  void *p = NULL;
  size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 0) : 0x200000;
  printf("hipMalloc -> %d\n", hipMalloc(&p, n));
  printf("hipFree -> %d\n", hipFree(p));
  return 0;
}
