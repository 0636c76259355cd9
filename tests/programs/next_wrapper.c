/* A user's interposer preloaded after rocm-fix: wraps hipMalloc and reaches
 * the next definition with dlvsym(RTLD_NEXT, "hipMalloc", "hip_4.2"), which
 * must be the runtime's, never rocm-fix's hook (that would call this wrapper
 * again). Says on stderr what each call did. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
int hipMalloc(void **p, size_t n) {
  static int (*real)(void **, size_t);
  static __thread int depth;
  if (!real) real = (int (*)(void **, size_t))dlvsym(RTLD_NEXT, "hipMalloc", "hip_4.2");
  if (depth) {
    fprintf(stderr, "next_wrapper: called again from its own real function\n");
    return 999;
  }
  depth++;
  int r = real ? real(p, n) : 998;
  depth--;
  fprintf(stderr, "next_wrapper: hipMalloc -> %d\n", r);
  return r;
}
