/* hipMalloc(4096) then hipMemGetInfo, on any build: "malloc R free F total T". */
#include <stdio.h>

#include "simgpu.h"

int main(void) {
  void *p = NULL;
  size_t free_bytes = 0, total = 0;
  int r = hipMalloc(&p, 4096);
  hipMemGetInfo(&free_bytes, &total);
  printf("malloc %d free %zu total %zu\n", r, free_bytes, total);
  return 0;
}
