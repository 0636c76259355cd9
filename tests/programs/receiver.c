/* rocm-fix's rocprofiler-register receiver, called as rocprofiler-register
 * calls it (src/preload/src/apitable.rs): rocprofiler_configure answers NULL;
 * rocprofiler_set_api_table answers for each library what the profiler it
 * passes the table on to answers; when there is none, what makes the
 * library's own code behave as with no tool (non-zero for "hsa" and for
 * libraries whose callers were not checked, 0 for hip, hip_compiler, roctx
 * and rccl),
 * and leaves a table that is not the HIP runtime's alone. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

int main(void) {
  void *(*configure)(uint32_t, const char *, uint32_t, void *) =
      (void *(*)(uint32_t, const char *, uint32_t, void *))dlsym(RTLD_DEFAULT, "rocprofiler_configure");
  int (*set)(const char *, uint64_t, uint64_t, void **, uint64_t) =
      (int (*)(const char *, uint64_t, uint64_t, void **, uint64_t))dlsym(RTLD_DEFAULT, "rocprofiler_set_api_table");
  if (!configure || !set) {
    puts("no receiver");
    return 0;
  }
  printf("configure: %s\n", configure(0, "", 0, NULL) ? "a result" : "NULL");
  static uint64_t table[8] = {sizeof table}; /* a table of 7 entries, all null */
  void *tables[1] = {table};
  const char *names[] = {"hsa", "hip", "hip_compiler", "roctx", "rccl", "rocdecode"};
  for (unsigned i = 0; i < 6; i++) printf("%s: %d\n", names[i], set(names[i], 70200, 0, tables, 1));
  int untouched = 1;
  for (unsigned i = 1; i < 8; i++) untouched &= table[i] == 0;
  printf("table untouched: %s\n", untouched ? "yes" : "no");
  return 0;
}
