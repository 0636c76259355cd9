/*
 * rocm_fix.h — the C API of librocm_fix.so.
 *
 * Conventions: the caller owns every buffer; a function copies at most the
 * size it is given, so older callers with a shorter struct keep working.
 */
#ifndef ROCM_FIX_H
#define ROCM_FIX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Counters since the process started. */
struct rocm_fix_stats {
  uint64_t intercepted;      /* hooked calls seen */
  uint64_t rewritten;        /* coherent → non-coherent rewrites applied */
  uint64_t padded;           /* buffers given a sink or padding: memory after their end kept mapped */
  uint64_t padded_bytes;     /* VRAM bytes that added (padding, and one sink buffer per GPU) */
  uint64_t retried;          /* padded or rewritten allocations that failed and were retried as asked */
  uint64_t faults;           /* GPU memory faults seen by the fault handler */
  char version[16];          /* rocm-fix's version, NUL-terminated */
  uint64_t live_allocations; /* allocations rocm-fix tracks right now */
};

/* Copies min(size, sizeof(struct rocm_fix_stats)) bytes of the counters to
 * *out. Returns 0. Never loads anything: before the first HIP call, or with
 * ROCM_FIX_MODE=off, the counters are zero. */
int rocm_fix_get_stats(struct rocm_fix_stats *out, size_t size);

#ifdef __cplusplus
}
#endif
#endif
