/* dladdr@GLIBC_2.34 (tests/programs/slow_dladdr.map) that, on the thread
 * marked by slow_mark(), from its third call on, says so (slow_entered) and
 * sleeps: widens the window in which rocm-fix's receiver is taking the HIP
 * table over, without changing what any call returns (table_race.c). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
static __thread int marked, calls;
static volatile int entered;
void slow_mark(void) { marked = 1; }
int slow_entered(void) { return entered; }
int dladdr(const void *a, Dl_info *i) {
  static int (*real)(const void *, Dl_info *);
  if (!real) real = (int (*)(const void *, Dl_info *))dlvsym(RTLD_NEXT, "dladdr", "GLIBC_2.34");
  if (marked && ++calls >= 3) {
    entered = 1;
    usleep(400000);
  }
  return real(a, i);
}
