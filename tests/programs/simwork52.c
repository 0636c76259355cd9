/* hipExtMallocWithFlags(ptr, 4096, FLAGS) on any build; prints "ext <result>". */
#include <stdio.h>
#include <stdlib.h>

#include "simgpu.h"

hipError_t hipExtMallocWithFlags(void **, size_t, unsigned);

int main(int argc, char **argv) {
  void *p = NULL;
  printf("ext %d\n", hipExtMallocWithFlags(&p, 4096, argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 0));
  return 0;
}
