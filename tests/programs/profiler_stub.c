/* A stand-in for a profiler the user runs (rocprofv3), for the AMD-style
 * simulated runtimes whose libamdhip64 hands its API table to
 * rocprofiler-register (tests/simgpu/hip_table.c). rocprofv3 appends
 * librocprofiler-sdk-tool.so (which defines rocprofiler_configure and links
 * librocprofiler-sdk.so) and librocprofiler-sdk.so to LD_PRELOAD
 * (ROCm/rocm-systems projects/rocprofiler-sdk/source/bin/rocprofv3.py at
 * 1b1610fc2b2a). Built twice:
 *   -DSDK   librocprofiler-sdk.so: rocprofiler_set_api_table, which for "hip"
 *           keeps a copy of the table's entries per instance and installs its
 *           own wrapper over hipMalloc_fn, as the SDK's copy_table and
 *           update_table do (projects/rocprofiler-sdk/source/lib/
 *           rocprofiler-sdk/registration.cpp); every registration and every
 *           hipMalloc it sees is a line in $PROFILER_LOG;
 *   -DTOOL  librocprofiler-sdk-tool.so: rocprofiler_configure (the stand-in
 *           configures nothing and returns NULL).
 * Not a model of what the SDK records; only of how it takes the table. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TOOL
void *rocprofiler_configure(uint32_t version, const char *runtime_version, uint32_t priority, void *id) {
  (void)version, (void)runtime_version, (void)priority, (void)id;
  return NULL;
}
#endif

#ifdef SDK
#define HIP_MALLOC_FN 215 /* clr hip_api_trace.cpp: HIP_ENFORCE_ABI(HipDispatchTable, hipMalloc_fn, 215) */
typedef int (*malloc_t)(void **, size_t);

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void say(const char *fmt, ...) {
  const char *path = getenv("PROFILER_LOG");
  if (!path) return;
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  if (write(fd, line, n) < 0) { /* nothing to do */ }
  close(fd);
}

static malloc_t orig[2];
static int wrap(int instance, void **p, size_t size) {
  say("profiler: hipMalloc instance %d\n", instance);
  return orig[instance](p, size);
}
static int wrap0(void **p, size_t size) { return wrap(0, p, size); }
static int wrap1(void **p, size_t size) { return wrap(1, p, size); }

int rocprofiler_set_api_table(const char *name, uint64_t version, uint64_t instance, void **tables,
                              uint64_t ntables) {
  say("profiler: table %s version %llu instance %llu\n", name, (unsigned long long)version,
      (unsigned long long)instance);
  if (strcmp(name, "hip") || ntables < 1 || instance > 1) return 0;
  void **fn = (void **)((char *)tables[0] + 8);
  orig[instance] = (malloc_t)fn[HIP_MALLOC_FN];
  fn[HIP_MALLOC_FN] = instance ? (void *)wrap1 : (void *)wrap0;
  return 0;
}
#endif
