/* A stand-in libamdhip64.so.6 for scripts/bench only: hipMalloc hands out
 * addresses from a per-thread bump pointer, hipFree does nothing, no lock,
 * no system call. It isolates rocm-fix's own hot path when measuring how
 * alloc/free throughput scales with threads (the simulated device has a
 * global lock, as a simple runtime would, and cannot show that). */
#include <stddef.h>
#include <stdint.h>

static __thread uintptr_t next;
static uintptr_t slab;

int hipMalloc(void **ptr, size_t size) {
  if (!next) next = __atomic_add_fetch(&slab, (uintptr_t)1 << 36, __ATOMIC_RELAXED);
  *ptr = (void *)next;
  next += (size + 4095) & ~(size_t)4095;
  return 0;
}
int hipFree(void *ptr) { (void)ptr; return 0; }
int hipGetDevice(int *d) { *d = 0; return 0; }
int hipPeekAtLastError(void) { return 0; }
int hipGetLastError(void) { return 0; }
