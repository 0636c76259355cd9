/* Stands in for RCCL (built as librccl_fake.so: the name is what counts):
 * its proxy buffer is pinned mapped host memory and its flag is uncached
 * device memory, both polled by a kernel while the host writes them, so
 * they must stay coherent. */
#include "simgpu.h"

int rccl_fake_alloc(void **host, void **flag) {
  if (hipHostMalloc(host, 4096, hipHostMallocMapped) != hipSuccess) return 1;
  return hipExtMallocWithFlags(flag, 4096, hipDeviceMallocUncached) != hipSuccess;
}
