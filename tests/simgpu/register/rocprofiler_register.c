/*
 * simgpu's librocprofiler-register.so.0: a stand-in for AMD's
 * rocprofiler-register, which AMD's and TheRock's builds of libamdhip64 link
 * (clr hipamd/src/CMakeLists.txt, HIP_ENABLE_ROCPROFILER_REGISTER, ON for
 * shared Linux builds) and Debian's do not (their NEEDED is HSA and the C/C++
 * runtime only). Built only for the AMD-style simulated runtimes
 * (scripts/simgpu-build 6.4-amd / 7.2-amd). Each rule follows
 * ROCm/rocm-systems projects/rocprofiler-register/source/lib/
 * rocprofiler-register/rocprofiler_register.cpp at commit 1b1610fc2b2a
 * (August 2025; the same protocol as ROCm/rocprofiler-register rocm-6.1.2):
 *
 * - rocprofiler_register_library_api_table(name, import, version, tables, n, id):
 *   n < 1 is ROCP_REG_BAD_API_TABLE_LENGTH; ROCPROFILER_REGISTER_ENABLED=0
 *   gives ROCP_REG_NO_TOOLS; a re-entered call ROCP_REG_DEADLOCK; a name
 *   other than hsa, hip, roctx, hip_compiler, rccl, rocdecode, rocjpeg
 *   ROCP_REG_UNSUPPORTED_API; more than 8 instances of one library
 *   ROCP_REG_EXCESS_API_INSTANCES (64 bits / max(ROCP_REG_LAST, 8)); each
 *   registration of a library gets the next instance number (0, 1, ...: one
 *   per runtime copy that registers with this copy of rocprofiler-register),
 *   encoded into *id.
 * - Tools are found (rocp_reg_scan_for_tools) if a `rocprofiler_configure`
 *   symbol is visible (a weak reference bound when this library was loaded,
 *   or dlsym(RTLD_DEFAULT)), or ROCP_TOOL_LIBRARIES / ROCPROFILER_REGISTER_LIBRARY
 *   is set, or ROCPROFILER_REGISTER_FORCE_LOAD (default: whether either is set).
 * - Then the receiver, rocprofiler_set_api_table, is taken from (in order) the
 *   weak reference (a preload or a library linked before this one), then
 *   dlsym(RTLD_DEFAULT), then by dlopen of ROCPROFILER_REGISTER_LIBRARY or
 *   librocprofiler-sdk.so (RTLD_NOLOAD, then RTLD_GLOBAL|RTLD_LAZY by the
 *   name, by the name in this library's folder, by its basename); found once,
 *   kept for the process. A tool without a receiver is fatal (glog
 *   LOG_IF(FATAL): the process aborts).
 * - The receiver is called as set_api_table(name, version, instance, tables, n):
 *   exactly one receiver per process; non-zero is ROCP_REG_ROCPROFILER_ERROR.
 *   With no tool the registration is kept (ROCP_REG_NO_TOOLS) for
 *   rocprofiler_register_invoke_nonpropagated_registrations (a debugger's
 *   ptrace entry).
 *
 * Not modelled: ROCPROFILER_REGISTER_SECURE (the import function's address
 * checked against the library's file name), glog's own settings, and
 * rocprofiler_register_iterate_registration_info.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint32_t (*import_func_t)(void);
typedef struct {
  uint64_t handle;
} register_id_t;
typedef int (*set_api_table_t)(const char *, uint64_t, uint64_t, void **, uint64_t);

enum {
  ROCP_REG_SUCCESS = 0,
  ROCP_REG_NO_TOOLS,
  ROCP_REG_DEADLOCK,
  ROCP_REG_BAD_API_TABLE_LENGTH,
  ROCP_REG_UNSUPPORTED_API,
  ROCP_REG_INVALID_API_ADDRESS,
  ROCP_REG_ROCPROFILER_ERROR,
  ROCP_REG_EXCESS_API_INSTANCES,
  ROCP_REG_ERROR_CODE_END,
};

/* The weak references of the real library (#pragma weak): bound by the
 * dynamic linker when this library is loaded, to the first definition in the
 * global scope (the executable, then preloads), else null. */
extern void *rocprofiler_configure(uint32_t, const char *, uint32_t, void *) __attribute__((weak));
extern int rocprofiler_set_api_table(const char *, uint64_t, uint64_t, void **, uint64_t)
    __attribute__((weak));

/* rocp_reg_supported_library, in its order (ROCP_REG_LAST = 7). */
static const char *const libraries[] = {"hsa", "hip", "roctx", "hip_compiler", "rccl", "rocdecode", "rocjpeg"};
#define ROCP_REG_LAST 7
#define OFFSET_FACTOR (64 / (ROCP_REG_LAST > 8 ? ROCP_REG_LAST : 8))

struct registration {
  int used, propagated;
  const char *name;
  uint32_t version;
  uint64_t instance;
  void *tables[8];
  uint64_t ntables;
};
static struct registration registered[64 * ROCP_REG_LAST];
static uint64_t instance_counters[ROCP_REG_LAST];
static int global_count;

/* common::get_env<bool> (details/environment.hpp): all digits is stoi != 0;
 * off/false/no/n/f/0 (any case) false; any other text true; an empty value
 * throws std::runtime_error (uncaught: the process terminates). */
static int env_bool(const char *name, int fallback) {
  const char *v = getenv(name);
  if (!v) return fallback;
  if (!*v) {
    fprintf(stderr, "terminate called: No boolean value provided for %s\n", name);
    abort();
  }
  if (strspn(v, "0123456789") == strlen(v)) return atoi(v) != 0;
  static const char *const no[] = {"off", "false", "no", "n", "f", "0"};
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    if (strcasecmp(v, no[i]) == 0) return 0;
  return 1;
}

static const char *env_str(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

static void fatal(const char *what, const char *lib) {
  fprintf(stderr, "F simgpu rocprofiler-register: %s not found. Tried to dlopen %s\n", what, lib);
  abort();
}

/* The folder of this library (get_this_library_path). */
static void this_folder(char *out, size_t cap) {
  Dl_info info;
  out[0] = 0;
  if (dladdr((void *)this_folder, &info) && info.dli_fname) {
    snprintf(out, cap, "%s", info.dli_fname);
    char *slash = strrchr(out, '/');
    if (slash) *slash = 0;
    else out[0] = 0;
  }
}

static set_api_table_t receiver; /* found once (the static of rocp_reg_scan_for_tools) */

static set_api_table_t load_rocprofiler_lib(const char *lib) {
  if (rocprofiler_set_api_table) return rocprofiler_set_api_table; /* "found via LD_PRELOAD" */
  set_api_table_t f = (set_api_table_t)dlsym(RTLD_DEFAULT, "rocprofiler_set_api_table");
  if (f) return f;
  const char *base = strrchr(lib, '/') ? strrchr(lib, '/') + 1 : lib;
  void *h = dlopen(lib, RTLD_NOLOAD | RTLD_LAZY);
  if (!h) h = dlopen(lib, RTLD_GLOBAL | RTLD_LAZY);
  if (!h && lib[0] != '/') {
    char dir[4096], path[4200];
    this_folder(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, base);
    h = dlopen(path, RTLD_GLOBAL | RTLD_LAZY);
  }
  if (!h) h = dlopen(base, RTLD_GLOBAL | RTLD_LAZY);
  return h ? (set_api_table_t)dlsym(h, "rocprofiler_set_api_table") : NULL;
}

static set_api_table_t scan_for_tools(void) {
  void *configure = dlsym(RTLD_DEFAULT, "rocprofiler_configure");
  const char *tool_libs = env_str("ROCP_TOOL_LIBRARIES");
  const char *reg_lib = env_str("ROCPROFILER_REGISTER_LIBRARY");
  int force = env_bool("ROCPROFILER_REGISTER_FORCE_LOAD", *reg_lib || *tool_libs);
  if (!(rocprofiler_configure || configure || force)) return NULL;
  if (receiver) return receiver;
  const char *lib = *reg_lib ? reg_lib : "librocprofiler-sdk.so";
  receiver = load_rocprofiler_lib(lib);
  if (!receiver) fatal("rocprofiler_set_api_table", lib);
  return receiver;
}

EXPORT int rocprofiler_register_library_api_table(const char *name, import_func_t import, uint32_t version,
                                                  void **tables, uint64_t ntables, register_id_t *id) {
  (void)import;
  if (ntables < 1) return ROCP_REG_BAD_API_TABLE_LENGTH;
  if (!env_bool("ROCPROFILER_REGISTER_ENABLED", 1)) return ROCP_REG_NO_TOOLS;
  int depth = __atomic_add_fetch(&global_count, 1, __ATOMIC_SEQ_CST);
  int result = ROCP_REG_SUCCESS;
  if (depth > 1) {
    result = ROCP_REG_DEADLOCK;
    goto out;
  }
  set_api_table_t set = scan_for_tools();
  int idx = -1;
  for (int i = 0; i < ROCP_REG_LAST; i++)
    if (strcmp(libraries[i], name) == 0) idx = i;
  if (idx < 0) {
    result = ROCP_REG_UNSUPPORTED_API;
    goto out;
  }
  if (instance_counters[idx] >= OFFSET_FACTOR) {
    result = ROCP_REG_EXCESS_API_INSTANCES;
    goto out;
  }
  uint64_t instance = instance_counters[idx]++;
  id->handle = (uint64_t)(OFFSET_FACTOR * idx) + instance; /* the bitset the real one builds */
  struct registration *r = NULL;
  for (size_t i = 0; i < sizeof registered / sizeof *registered && !r; i++)
    if (!registered[i].used) r = &registered[i];
  if (r) {
    *r = (struct registration){1, 0, name, version, instance, {0}, ntables > 8 ? 8 : ntables};
    memcpy(r->tables, tables, r->ntables * sizeof *tables);
  }
  if (!set) {
    result = ROCP_REG_NO_TOOLS;
    goto out;
  }
  if (set(name, version, instance, tables, ntables) != 0) {
    result = ROCP_REG_ROCPROFILER_ERROR;
    goto out;
  }
  if (r) r->propagated = 1;
out:
  __atomic_sub_fetch(&global_count, 1, __ATOMIC_SEQ_CST);
  return result;
}

EXPORT const char *rocprofiler_register_error_string(int e) {
  static const char *const msg[] = {"Success",
                                    "rocprofiler-register found no tools",
                                    "rocprofiler-register deadlocked",
                                    "Library passed an invalid number of API tables",
                                    "Library's API is not supported",
                                    "Invalid API address (secure mode enabled)",
                                    "Unspecified rocprofiler-register error",
                                    "Too many instances of the same library API were registered"};
  return e >= 0 && e < ROCP_REG_ERROR_CODE_END ? msg[e] : "rocprofiler_register_unknown_error";
}

static int invoke(int all) {
  int depth = __atomic_add_fetch(&global_count, 1, __ATOMIC_SEQ_CST);
  int result = ROCP_REG_SUCCESS;
  if (depth > 1) {
    result = ROCP_REG_DEADLOCK;
    goto out;
  }
  for (size_t i = 0; i < sizeof registered / sizeof *registered; i++) {
    struct registration *r = &registered[i];
    if (!r->used || (r->propagated && !all)) continue;
    set_api_table_t set = scan_for_tools();
    if (!set) continue;
    if (set(r->name, r->version, r->instance, r->tables, r->ntables) != 0) {
      result = ROCP_REG_ROCPROFILER_ERROR;
      goto out;
    }
    r->propagated = 1;
  }
out:
  __atomic_sub_fetch(&global_count, 1, __ATOMIC_SEQ_CST);
  return result;
}

EXPORT int rocprofiler_register_invoke_nonpropagated_registrations(void) { return invoke(0); }
EXPORT int rocprofiler_register_invoke_all_registrations(void) { return invoke(1); }
