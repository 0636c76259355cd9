/*
 * simgpu's libhsa-runtime64.so.1: a stand-in for ROCr that models the pools,
 * the agent identity and the GPU-fault behaviour of ROCr, libhsakmt and KFD as
 * the sources cited below show. Where ROCm releases differ it follows the release of
 * its build (SIMGPU_ROCM_VERSION_DEFAULT: 5.2, 6.4 or 7.2); SIMGPU_ROCM_VERSION
 * may select an older minor of the same major (6.2 on the 6.4 build). The fault
 * rules are documented, with their sources, in FAULT-MODEL.md.
 *
 * Memory: hsa_kfd.c models libhsakmt (one object per KFD allocation, whole
 * objects GPU-mapped, an unmapped guard page after each) and hsa_heap.c ROCr's
 * fragment allocator (ordinary VRAM sub-allocated from 2 MiB blocks); this
 * file keeps ROCr's allocation map and the API. FAULT-MODEL.md has the rules.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "calllog.h"
#include "model.h"
#include "simgpu.h"
#include "simgpu_private.h"

#define EXPORT __attribute__((visibility("default")))
#define PAGE 4096UL
#define MAX_AGENTS 16
#define MAX_POOLS 64
#define MAX_HANDLERS 32

/* ---- configuration ---- */

#ifndef SIMGPU_ROCM_VERSION_DEFAULT
#define SIMGPU_ROCM_VERSION_DEFAULT 604 /* scripts/simgpu-build sets 502, 604 or 702 per build */
#endif

/* The release modelled (504 = 5.4 etc.): the build's, or an older minor of the
 * same major named by SIMGPU_ROCM_VERSION. Another major is ignored, once, with
 * a warning: the exports and soname of this build are that major's. */
static int rocm_version(void) {
  static int warned;
  const char *v = getenv("SIMGPU_ROCM_VERSION");
  if (!v || !*v) return SIMGPU_ROCM_VERSION_DEFAULT;
  int maj = 0, min = 0;
  if (sscanf(v, "%d.%d", &maj, &min) != 2) return SIMGPU_ROCM_VERSION_DEFAULT;
  if (maj != SIMGPU_ROCM_VERSION_DEFAULT / 100) {
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      fprintf(stderr, "simgpu: SIMGPU_ROCM_VERSION=%s ignored: this build models ROCm %d.%d\n", v,
              SIMGPU_ROCM_VERSION_DEFAULT / 100, SIMGPU_ROCM_VERSION_DEFAULT % 100);
    return SIMGPU_ROCM_VERSION_DEFAULT;
  }
  return maj * 100 + min;
}

static int env_is(const char *name, const char *val) {
  const char *v = getenv(name);
  return v && strcmp(v, val) == 0;
}

/* The fault rules in force: SIMGPU_FAULT_RULES=list|all|none (FAULT-MODEL.md). */
static unsigned rules_mask(void) {
  static unsigned cached = ~0u;
  if (cached != ~0u) return cached;
  const char *v = getenv("SIMGPU_FAULT_RULES");
  unsigned m = SIMGPU_RULES_DEFAULT;
  if (v) {
    m = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      while (*t == ' ') t++;
      if (!strcmp(t, "all")) m |= SIMGPU_RULES_ALL;
      else if (!strcmp(t, "default")) m |= SIMGPU_RULES_DEFAULT;
      else if (!strcmp(t, "none") || !*t) ;
      else if (!strcmp(t, "page-not-present")) m |= RULE_PAGE_NOT_PRESENT;
      else if (!strcmp(t, "seed-coherent")) m |= RULE_SEED_COHERENT;
      else if (!strcmp(t, "override-family")) m |= RULE_OVERRIDE_FAMILY;
      else if (!strcmp(t, "override-rdna1-as-rdna2")) m |= RULE_OVERRIDE_RDNA1_AS_RDNA2;
      else if (!strcmp(t, "internal-coherence")) m |= RULE_INTERNAL_COHERENCE;
      else fprintf(stderr, "simgpu: unknown fault rule '%s' in SIMGPU_FAULT_RULES (ignored)\n", t);
    }
  }
  cached = m;
  return m;
}

EXPORT unsigned simgpu_fault_rules(void) { return rules_mask(); }

static int fragment_allocator_disabled(void);
static void start_event_thread_locked(void);

/* ---- agents and pools ---- */

struct agent {
  int is_gpu;
  uint32_t node;          /* KFD topology node */
  uint32_t real_version;  /* gfx_target_version from sysfs: never overridden */
  uint32_t report_version;/* after HSA_OVERRIDE_GFX_VERSION (libhsakmt topology.c) */
  uint32_t device_id;
  uint32_t simd_count, simd_per_cu, wave_front_size;
  uint64_t mem_size;
  char name[64];
  char product[64];
  int pools[6];
  int npools;
};

struct pool {
  int agent;
  uint32_t flags;
  int location;
  struct heap *heap; /* VRAM pools: ROCr's fragment allocator (hsa_heap.c) */
};

/* Runtime::allocation_map_: what hsa_amd_memory_pool_free accepts. */
struct alloc {
  uintptr_t base;
  size_t size;      /* page-rounded, as ROCr records it */
  size_t requested; /* as asked */
  int pool;
  int sub;          /* from the fragment allocator */
};

struct svm {
  uintptr_t base;
  size_t size;
  int coarse;             /* GLOBAL_FLAG: KFD default is coherent (amdkfd kfd_svm.c) */
  uint32_t accessible;    /* bit per agent */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int init_count;
static struct agent agents[MAX_AGENTS];
static int nagents;
static struct pool pools[MAX_POOLS];
static int npools;
static struct alloc *allocs; /* sorted by base */
static size_t nallocs, cap_allocs;
static struct svm *svms;
static size_t nsvms, cap_svms;
static struct { hsa_amd_system_event_callback_t cb; void *data; } handlers[MAX_HANDLERS];
static int nhandlers;
static int fault_taken;   /* the fault signal is not re-armed (runtime.cpp VMFaultHandler) */
static int queues_dead;   /* KFD evicted the queues (amdkfd kfd_int_process_v9.c) */
static int launched;      /* first-launch rules (override-family) */

static const char *topology_root(void) {
  const char *r = getenv("SIMGPU_KFD_TOPOLOGY");
  return (r && *r) ? r : "/sys/class/kfd/kfd/topology";
}

static int read_props(const char *root, int node, struct agent *a) {
  char path[4096];
  snprintf(path, sizeof path, "%s/nodes/%d/properties", root, node);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  memset(a, 0, sizeof *a);
  a->node = (uint32_t)node;
  char key[128];
  unsigned long long val;
  uint64_t mem = 0;
  while (fscanf(f, "%127s %llu", key, &val) == 2) {
    if (!strcmp(key, "simd_count")) a->simd_count = (uint32_t)val;
    else if (!strcmp(key, "gfx_target_version")) a->real_version = (uint32_t)val;
    else if (!strcmp(key, "device_id")) a->device_id = (uint32_t)val;
    else if (!strcmp(key, "simd_per_cu")) a->simd_per_cu = (uint32_t)val;
    else if (!strcmp(key, "wave_front_size")) a->wave_front_size = (uint32_t)val;
    else if (!strcmp(key, "local_mem_size")) mem = val;
  }
  fclose(f);
  a->is_gpu = a->simd_count > 0;
  a->mem_size = mem ? mem : (a->is_gpu ? (8ULL << 30) : (64ULL << 30));
  return 0;
}

static void version_name(uint32_t v, char *out, size_t n) {
  /* gfx_target_version = major*10000 + minor*100 + stepping (libhsakmt.h HSA_GET_GFX_VERSION_*);
   * stepping is hex in the name (ROCR-Runtime isa.cpp: gfx90a is 9.0.10). */
  snprintf(out, n, "gfx%u%u%x", v / 10000, (v / 100) % 100, v % 100);
}

/* HSA_OVERRIDE_GFX_VERSION=major.minor.stepping, decimal; 6.3+ also _<node> (libhsakmt topology.c). */
static uint32_t override_for(uint32_t node, uint32_t real) {
  char var[64];
  snprintf(var, sizeof var, "HSA_OVERRIDE_GFX_VERSION_%u", node);
  const char *v = rocm_version() >= 603 ? getenv(var) : NULL;
  if (!v) v = getenv("HSA_OVERRIDE_GFX_VERSION");
  unsigned a, b, c;
  char extra;
  if (v && sscanf(v, "%u.%u.%u%c", &a, &b, &c, &extra) == 3 && b < 100 && c < 100) return a * 10000 + b * 100 + c;
  return real;
}

static const char *marketing_name(uint32_t device_id) {
  /* A few entries of libdrm's amdgpu.ids, by PCI device id. */
  switch (device_id) {
  case 0x731f: return "AMD Radeon RX 5700 XT";
  case 0x7340: return "AMD Radeon RX 5500 XT";
  case 0x7360: return "AMD Radeon Pro 5600M";
  case 0x73bf: return "AMD Radeon RX 6900 XT";
  case 0x73df: return "AMD Radeon RX 6700 XT";
  case 0x73ff: return "AMD Radeon RX 6600 XT";
  case 0x743f: return "AMD Radeon RX 6500 XT";
  case 0x744c: return "AMD Radeon RX 7900 XTX";
  case 0x747e: return "AMD Radeon RX 7800 XT";
  case 0x7480: return "AMD Radeon RX 7600";
  case 0x7550: return "AMD Radeon RX 9070 XT";
  case 0x740f: return "AMD Instinct MI210";
  default: return "AMD Radeon Graphics";
  }
}

static void add_pool(struct agent *a, int agent_idx, uint32_t flags, int location) {
  if (npools >= MAX_POOLS || a->npools >= 6) return;
  pools[npools] = (struct pool){agent_idx, flags, location, NULL};
  if (location == HSA_AMD_MEMORY_POOL_LOCATION_GPU) pools[npools].heap = heap_new(npools);
  a->pools[a->npools++] = npools++;
}

/* The pools each agent exposes (ROCR-Runtime amd_gpu_agent.cpp, amd_cpu_agent.cpp, rocm-6.2.4). */
static void build_pools(void) {
  int ver = rocm_version();
  for (int i = 0; i < nagents; i++) {
    struct agent *a = &agents[i];
    if (a->is_gpu) {
      add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_GPU);
      int gfx12_0 = a->real_version / 100 == 1200;
      if (ver >= 507 && !gfx12_0)
        add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_GPU);
      if (env_is("HSA_FORCE_FINE_GRAIN_PCIE", "1"))
        add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_GPU);
    } else {
      add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_CPU);
      add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED | HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_KERNARG_INIT,
               HSA_AMD_MEMORY_POOL_LOCATION_CPU);
      add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_CPU);
      if (ver >= 604)
        add_pool(a, i, HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED, HSA_AMD_MEMORY_POOL_LOCATION_CPU);
    }
  }
}

static hsa_status_t load_topology(void) {
  const char *root = topology_root();
  char path[4096];
  snprintf(path, sizeof path, "%s/nodes", root);
  DIR *d = opendir(path);
  if (!d) return HSA_STATUS_ERROR_OUT_OF_RESOURCES; /* no KFD: ROCr's hsa_init fails the same way */
  closedir(d);
  nagents = 0;
  npools = 0;
  for (int node = 0; node < MAX_AGENTS; node++) {
    struct agent a;
    if (read_props(root, node, &a) != 0) break;
    if (a.is_gpu) {
      a.report_version = override_for(a.node, a.real_version);
      version_name(a.report_version, a.name, sizeof a.name);
      snprintf(a.product, sizeof a.product, "%s", marketing_name(a.device_id));
    } else {
      snprintf(a.name, sizeof a.name, "Simulated x86_64 CPU");
      snprintf(a.product, sizeof a.product, "Simulated x86_64 CPU");
    }
    agents[nagents++] = a;
  }
  if (nagents == 0) return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  uint64_t vram[MAX_AGENTS];
  for (int i = 0; i < nagents; i++) vram[i] = agents[i].is_gpu ? agents[i].mem_size : 0;
  if (kfd_init(nagents, vram) != 0) return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  build_pools();
  return HSA_STATUS_SUCCESS;
}

static int agent_index(hsa_agent_t a) {
  uintptr_t h = (uintptr_t)a.handle, b = (uintptr_t)&agents[0];
  if (h < b || h >= (uintptr_t)&agents[nagents] || (h - b) % sizeof(struct agent)) return -1;
  return (int)((h - b) / sizeof(struct agent));
}
static hsa_agent_t agent_handle(int i) { return (hsa_agent_t){(uint64_t)(uintptr_t)&agents[i]}; }
static int pool_index(hsa_amd_memory_pool_t p) {
  uintptr_t h = (uintptr_t)p.handle, b = (uintptr_t)&pools[0];
  if (h < b || h >= (uintptr_t)&pools[npools] || (h - b) % sizeof(struct pool)) return -1;
  return (int)((h - b) / sizeof(struct pool));
}
static hsa_amd_memory_pool_t pool_handle(int i) { return (hsa_amd_memory_pool_t){(uint64_t)(uintptr_t)&pools[i]}; }

static int initialized(void) {
  pthread_mutex_lock(&lock);
  int r = init_count > 0;
  pthread_mutex_unlock(&lock);
  return r;
}

/* ---- the API ---- */

EXPORT hsa_status_t hsa_init(void) {
  pthread_mutex_lock(&lock);
  hsa_status_t st = HSA_STATUS_SUCCESS;
  if (init_count == 0) st = load_topology();
  if (st == HSA_STATUS_SUCCESS && init_count++ == 0) start_event_thread_locked();
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_init", st, " ");
  return st;
}

EXPORT hsa_status_t hsa_shut_down(void) {
  pthread_mutex_lock(&lock);
  hsa_status_t st = init_count > 0 ? HSA_STATUS_SUCCESS : HSA_STATUS_ERROR_NOT_INITIALIZED;
  if (init_count > 0) init_count--;
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_shut_down", st, " ");
  return st;
}

EXPORT hsa_status_t hsa_system_get_info(uint32_t attribute, void *value) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  if (!initialized()) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!value) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (attribute == HSA_AMD_SYSTEM_INFO_SVM_SUPPORTED)
    *(bool *)value = !env_is("SIMGPU_HMM", "0"); /* a kernel without HMM: SIMGPU_HMM=0 */
  else if (attribute == HSA_AMD_SYSTEM_INFO_VIRTUAL_MEM_API_SUPPORTED && rocm_version() >= 600)
    *(bool *)value = true; /* a KFD with the VMM ioctls (6.0+) */
  else if (attribute == HSA_AMD_SYSTEM_INFO_SVM_ACCESSIBLE_BY_DEFAULT)
    *(bool *)value = false; /* true only with XNACK (runtime.cpp), which KFD never enables on RDNA (kfd_process.c) */
  else st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  calllog("hsa", "hsa_system_get_info", st, "\"attribute\":%u", attribute);
  return st;
}

EXPORT hsa_status_t hsa_iterate_agents(hsa_status_t (*cb)(hsa_agent_t, void *), void *data) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  if (!initialized()) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!cb) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else
    for (int i = 0; i < nagents; i++) {
      hsa_status_t r = cb(agent_handle(i), data);
      if (r != HSA_STATUS_SUCCESS) { st = r; break; }
    }
  calllog("hsa", "hsa_iterate_agents", st, " ");
  return st;
}

EXPORT hsa_status_t hsa_agent_get_info(hsa_agent_t agent, uint32_t attribute, void *value) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  int i = initialized() ? agent_index(agent) : -2;
  char hs[32];
  if (i == -2) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (i < 0) st = HSA_STATUS_ERROR_INVALID_AGENT;
  else if (!value) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else {
    struct agent *a = &agents[i];
    switch (attribute) {
    case HSA_AGENT_INFO_NAME: memset(value, 0, 64); memcpy(value, a->name, strlen(a->name)); break;
    case HSA_AGENT_INFO_DEVICE: *(uint32_t *)value = a->is_gpu ? HSA_DEVICE_TYPE_GPU : HSA_DEVICE_TYPE_CPU; break;
    case HSA_AMD_AGENT_INFO_CHIP_ID: *(uint32_t *)value = a->device_id; break;
    case HSA_AMD_AGENT_INFO_DRIVER_NODE_ID: *(uint32_t *)value = a->node; break;
    case HSA_AMD_AGENT_INFO_PRODUCT_NAME: memset(value, 0, 64); memcpy(value, a->product, strlen(a->product)); break;
    case HSA_AMD_AGENT_INFO_ASIC_REVISION: *(uint32_t *)value = 0; break;
    case HSA_AMD_AGENT_INFO_MEMORY_AVAIL: { /* amd_gpu_agent.cpp: KFD's available bytes plus the fragment caches */
      uint64_t avail = a->mem_size - kfd_committed(i);
      for (int k = 0; k < npools; k++)
        if (pools[k].agent == i && pools[k].heap) avail += heap_cache_size(pools[k].heap);
      if (a->is_gpu) *(uint64_t *)value = avail;
      else st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
      break;
    }
    default: st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
    }
  }
  calllog("hsa", "hsa_agent_get_info", st, "\"agent\":%s,\"attribute\":%u", PTRSTR(hs, agent.handle), attribute);
  return st;
}

EXPORT hsa_status_t hsa_amd_agent_iterate_memory_pools(hsa_agent_t agent,
                                                       hsa_status_t (*cb)(hsa_amd_memory_pool_t, void *),
                                                       void *data) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  int i = initialized() ? agent_index(agent) : -2;
  char hs[32];
  if (i == -2) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (i < 0) st = HSA_STATUS_ERROR_INVALID_AGENT;
  else if (!cb) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else
    for (int k = 0; k < agents[i].npools; k++) {
      hsa_status_t r = cb(pool_handle(agents[i].pools[k]), data);
      if (r != HSA_STATUS_SUCCESS) { st = r; break; }
    }
  calllog("hsa", "hsa_amd_agent_iterate_memory_pools", st, "\"agent\":%s", PTRSTR(hs, agent.handle));
  return st;
}

EXPORT hsa_status_t hsa_amd_memory_pool_get_info(hsa_amd_memory_pool_t pool, uint32_t attribute, void *value) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  int i = initialized() ? pool_index(pool) : -2;
  char hs[32];
  if (i == -2) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (i < 0 || !value) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else {
    struct pool *p = &pools[i];
    switch (attribute) {
    case HSA_AMD_MEMORY_POOL_INFO_SEGMENT: *(uint32_t *)value = HSA_AMD_SEGMENT_GLOBAL; break;
    case HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS: *(uint32_t *)value = p->flags; break;
    case HSA_AMD_MEMORY_POOL_INFO_SIZE: *(size_t *)value = agents[p->agent].mem_size; break;
    case HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED: *(bool *)value = true; break;
    case HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE:
    case HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALIGNMENT: *(size_t *)value = PAGE; break;
    case HSA_AMD_MEMORY_POOL_INFO_ACCESSIBLE_BY_ALL: *(bool *)value = p->location == HSA_AMD_MEMORY_POOL_LOCATION_CPU; break;
    case HSA_AMD_MEMORY_POOL_INFO_ALLOC_MAX_SIZE: *(size_t *)value = agents[p->agent].mem_size; break;
    case HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_REC_GRANULE: /* amd_memory_region.cpp GetPoolInfo (6.0+) */
      if (rocm_version() < 600) { st = HSA_STATUS_ERROR_INVALID_ARGUMENT; break; }
      *(size_t *)value = p->heap && !fragment_allocator_disabled() ? SIM_BLOCK : PAGE;
      break;
    case HSA_AMD_MEMORY_POOL_INFO_LOCATION:
      if (rocm_version() >= 505) *(uint32_t *)value = (uint32_t)p->location;
      else st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
      break;
    default: st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
    }
  }
  calllog("hsa", "hsa_amd_memory_pool_get_info", st, "\"pool\":%s,\"attribute\":%u", PTRSTR(hs, pool.handle), attribute);
  return st;
}

/* Caller holds lock. The allocation (as ROCr's allocation map records it)
 * whose [base, base+size) holds addr. */
static size_t alloc_lower(uintptr_t base) {
  size_t lo = 0, hi = nallocs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (allocs[mid].base < base) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
static struct alloc *find_alloc_locked(uintptr_t addr) {
  size_t i = alloc_lower(addr + 1);
  if (i == 0) return NULL;
  struct alloc *al = &allocs[i - 1];
  return addr < al->base + al->size ? al : NULL;
}
static struct svm *find_svm_locked(uintptr_t addr) {
  for (size_t i = 0; i < nsvms; i++)
    if (addr >= svms[i].base && addr < svms[i].base + svms[i].size) return &svms[i];
  return NULL;
}

/* HSA_DISABLE_FRAGMENT_ALLOCATOR (ROCR-Runtime src/core/util/flag.h, read
 * once at start-up): every VRAM allocation becomes its own KFD object. */
static int fragment_allocator_disabled(void) {
  static int cached = -1;
  if (cached < 0) cached = env_is("HSA_DISABLE_FRAGMENT_ALLOCATOR", "1");
  return cached;
}

/* Caller holds lock. See model.h. */
HIDDEN uintptr_t region_alloc_direct(int pool, size_t size) {
  const struct pool *p = &pools[pool];
  int vram = p->location == HSA_AMD_MEMORY_POOL_LOCATION_GPU;
  uintptr_t va = kfd_alloc(p->agent, vram, size, KOBJ_DIRECT);
  if (!va) { /* owner()->Trim(): every fragment cache of the agent, then once more */
    for (int k = 0; k < npools; k++)
      if (pools[k].agent == p->agent && pools[k].heap) heap_trim(pools[k].heap);
    va = kfd_alloc(p->agent, vram, size, KOBJ_DIRECT);
  }
  struct kobj *o = va ? kfd_find(va) : NULL;
  if (o) o->pool = pool;
  return va;
}

/* ROCr's hsa_amd_memory_pool_allocate (hsa_ext_amd.cpp) and
 * MemoryRegion::AllocateImpl (amd_memory_region.cpp), rocm-6.2.4: size 0 is
 * an invalid argument; more than the pool holds is an invalid allocation;
 * the size is rounded up to whole pages; ordinary VRAM (no PCIE, CONTIGUOUS
 * or EXECUTABLE flag) comes from the fragment allocator, everything else is
 * a KFD object of its own. */
EXPORT hsa_status_t hsa_amd_memory_pool_allocate(hsa_amd_memory_pool_t pool, size_t size, uint32_t flags, void **ptr) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  void *out = NULL;
  char hs[32], ps[32];
  pthread_mutex_lock(&lock);
  int i = init_count > 0 ? pool_index(pool) : -2;
  if (i == -2) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (i < 0 || !ptr || size == 0) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (flags & ~7u) st = HSA_STATUS_ERROR_INVALID_ARGUMENT; /* STANDARD|PCIE|CONTIGUOUS|EXECUTABLE (hsa_ext_amd.h) */
  else if (size > agents[pools[i].agent].mem_size) st = HSA_STATUS_ERROR_INVALID_ALLOCATION;
  else if (nallocs == cap_allocs &&
           !(allocs = realloc(allocs, (cap_allocs = cap_allocs ? cap_allocs * 2 : 64) * sizeof *allocs)))
    st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  else {
    size_t rounded = (size + PAGE - 1) & ~(PAGE - 1);
    int sub = pools[i].heap && flags == 0 && !fragment_allocator_disabled();
    uintptr_t va = sub ? heap_alloc(pools[i].heap, rounded) : region_alloc_direct(i, rounded);
    if (!va) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
    else {
      size_t k = alloc_lower(va);
      memmove(&allocs[k + 1], &allocs[k], (nallocs - k) * sizeof *allocs);
      allocs[k] = (struct alloc){va, rounded, size, i, sub};
      nallocs++;
      out = (void *)va;
      *ptr = out;
    }
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_memory_pool_allocate", st, "\"pool\":%s,\"pool_flags\":%u,\"pool_location\":%d,\"size\":%zu,\"flags\":%u,\"ptr\":%s",
          PTRSTR(hs, pool.handle), i >= 0 ? pools[i].flags : 0u, i >= 0 ? pools[i].location : -1, size, flags,
          PTRSTR(ps, out));
  return st;
}

/* Runtime::FreeMemory: only a pointer the allocation map holds. */
EXPORT hsa_status_t hsa_amd_memory_pool_free(void *ptr) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (ptr) {
    size_t k = alloc_lower((uintptr_t)ptr);
    if (k == nallocs || allocs[k].base != (uintptr_t)ptr) st = HSA_STATUS_ERROR_INVALID_ALLOCATION;
    else {
      struct alloc al = allocs[k];
      memmove(&allocs[k], &allocs[k + 1], (nallocs - k - 1) * sizeof *allocs);
      nallocs--;
      if (!(al.sub && heap_free(pools[al.pool].heap, al.base))) kfd_free(al.base, KOBJ_DIRECT);
    }
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_memory_pool_free", st, "\"ptr\":%s", PTRSTR(ps, ptr));
  return st;
}

/* Runtime::AllowAccess (runtime.cpp, rocm-6.2.4): only a pointer the
 * allocation map holds (HSA_STATUS_ERROR otherwise); the region maps the
 * whole KFD object, so for a fragment the whole block ("accessibility sticky
 * for fragments", amd_memory_region.cpp). */
EXPORT hsa_status_t hsa_amd_agents_allow_access(uint32_t num_agents, const hsa_agent_t *list, const uint32_t *flags,
                                                const void *ptr) {
  (void)flags;
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  size_t k = init_count ? alloc_lower((uintptr_t)ptr) : 0;
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!num_agents || !list || !ptr) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (k == nallocs || allocs[k].base != (uintptr_t)ptr) st = HSA_STATUS_ERROR;
  else {
    uint32_t mask = 0;
    for (uint32_t n = 0; n < num_agents && st == HSA_STATUS_SUCCESS; n++) {
      int ai = agent_index(list[n]);
      if (ai < 0) st = HSA_STATUS_ERROR_INVALID_AGENT;
      else if (agents[ai].is_gpu) mask |= 1u << ai;
    }
    struct kobj *o = kfd_find((uintptr_t)ptr);
    if (st == HSA_STATUS_SUCCESS && o) o->gpus |= mask;
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_agents_allow_access", st, "\"num_agents\":%u,\"ptr\":%s", num_agents, PTRSTR(ps, ptr));
  return st;
}

/* ---- virtual memory (runtime.cpp VMemory*, rocm-6.2.4; 6.0+) ----
 * A reservation is address space only, placed like any object (kfd.c, a
 * guard page after it); a handle is physical VRAM outside the fragment
 * allocator (AllocateMemoryOnly); the GPU sees a mapping only once
 * hsa_amd_vmem_set_access grants it. */
static struct { uintptr_t va; size_t size; } reservations[256];
static int nreservations;

EXPORT hsa_status_t hsa_amd_vmem_address_reserve(void **va, size_t size, uint64_t address, uint64_t flags) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  (void)flags;
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!va || !size || (size & (PAGE - 1))) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (nreservations == 256) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  else {
    /* FixedAddress first, then anywhere (runtime.cpp VMemoryAddressReserve). */
    uintptr_t a = address ? kfd_alloc_at(0, 0, size, KOBJ_VA, (uintptr_t)address) : 0;
    if (!a) a = kfd_alloc(0, 0, size, KOBJ_VA);
    if (!a) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
    else {
      reservations[nreservations].va = a;
      reservations[nreservations++].size = size;
      *va = (void *)a;
    }
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_address_reserve", st, "\"size\":%zu,\"va\":%s", size,
          PTRSTR(ps, st == HSA_STATUS_SUCCESS ? *va : NULL));
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_address_free(void *va, size_t size) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  int r = 0;
  while (r < nreservations && reservations[r].va != (uintptr_t)va) r++;
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (r == nreservations) st = HSA_STATUS_ERROR_INVALID_ALLOCATION;
  else if (reservations[r].size != size) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (kfd_free((uintptr_t)va, KOBJ_VA) != 0) st = HSA_STATUS_ERROR_RESOURCE_FREE; /* still mapped */
  else reservations[r] = reservations[--nreservations];
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_address_free", st, "\"va\":%s,\"size\":%zu", PTRSTR(ps, va), size);
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_handle_create(hsa_amd_memory_pool_t pool, size_t size, hsa_amd_memory_type_t type,
                                               uint64_t flags, hsa_amd_vmem_alloc_handle_t *handle) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  (void)type;
  (void)flags;
  pthread_mutex_lock(&lock);
  int i = init_count ? pool_index(pool) : -2;
  if (i == -2) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (i < 0 || !handle || !size || (size & (PAGE - 1))) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (pools[i].location != HSA_AMD_MEMORY_POOL_LOCATION_GPU) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else {
    uintptr_t id = kfd_alloc(pools[i].agent, 1, size, KOBJ_HANDLE);
    if (!id) {
      for (int k = 0; k < npools; k++)
        if (pools[k].agent == pools[i].agent && pools[k].heap) heap_trim(pools[k].heap);
      id = kfd_alloc(pools[i].agent, 1, size, KOBJ_HANDLE);
    }
    if (!id) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
    else {
      kfd_handle(id)->pool = i;
      handle->handle = id;
    }
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_handle_create", st, "\"size\":%zu,\"handle\":%lu", size,
          (unsigned long)(st == HSA_STATUS_SUCCESS ? handle->handle : 0));
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_handle_release(hsa_amd_vmem_alloc_handle_t handle) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!kfd_handle(handle.handle)) st = HSA_STATUS_ERROR_INVALID_ALLOCATION;
  else if (!kfd_handle_mapped(handle.handle)) kfd_free(handle.handle, KOBJ_HANDLE);
  else kfd_handle(handle.handle)->released = 1; /* still mapped (use_count): freed at its last unmap */
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_handle_release", st, "\"handle\":%lu", (unsigned long)handle.handle);
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_map(void *va, size_t size, size_t in_offset, hsa_amd_vmem_alloc_handle_t handle,
                                     uint64_t flags) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  (void)in_offset; /* unused by ROCr */
  (void)flags;
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!va || !size || kfd_map((uintptr_t)va, size, handle.handle) != 0) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else {
    struct kobj *h = kfd_handle(handle.handle);
    struct kobj *r = kfd_find((uintptr_t)va);
    if (h && r) r->pool = h->pool;
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_map", st, "\"va\":%s,\"size\":%zu,\"handle\":%lu", PTRSTR(ps, va), size,
          (unsigned long)handle.handle);
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_unmap(void *va, size_t size) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (kfd_unmap((uintptr_t)va, size) != 0) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_unmap", st, "\"va\":%s,\"size\":%zu", PTRSTR(ps, va), size);
  return st;
}

EXPORT hsa_status_t hsa_amd_vmem_set_access(void *va, size_t size, const hsa_amd_memory_access_desc_t *desc,
                                            size_t desc_cnt) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  uint32_t gpus = 0;
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!va || !desc || !desc_cnt) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  for (size_t k = 0; st == HSA_STATUS_SUCCESS && k < desc_cnt; k++) {
    int ai = agent_index(desc[k].agent_handle);
    if (ai < 0) st = HSA_STATUS_ERROR_INVALID_AGENT;
    else if (agents[ai].is_gpu && desc[k].permissions != HSA_ACCESS_PERMISSION_NONE) gpus |= 1u << ai;
  }
  if (st == HSA_STATUS_SUCCESS && kfd_set_access((uintptr_t)va, size, gpus) != 0) st = HSA_STATUS_ERROR_INVALID_ALLOCATION;
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_vmem_set_access", st, "\"va\":%s,\"size\":%zu", PTRSTR(ps, va), size);
  return st;
}

EXPORT hsa_status_t hsa_amd_register_system_event_handler(hsa_amd_system_event_callback_t cb, void *data) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char cs[32];
  pthread_mutex_lock(&lock);
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED; /* IS_OPEN (hsa_ext_amd.cpp) */
  else if (!cb) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (nhandlers == MAX_HANDLERS) st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
  else { handlers[nhandlers].cb = cb; handlers[nhandlers].data = data; nhandlers++; } /* appends (runtime.cpp SetCustomSystemEventHandler) */
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_register_system_event_handler", st, "\"callback\":%s", PTRSTR(cs, (void *)cb));
  return st;
}

/* svm_attributes_set on host VA that is not a pool allocation registers an SVM
 * range; KFD's default range flags are HOST_ACCESS|COHERENT (amdkfd kfd_svm.c). */
EXPORT hsa_status_t hsa_amd_svm_attributes_set(void *ptr, size_t size, hsa_amd_svm_attribute_pair_t *list,
                                               size_t count) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  char attrs[400] = "";
  size_t used = 0;
  for (size_t k = 0; list && k < count && used < sizeof attrs - 64; k++)
    used += (size_t)snprintf(attrs + used, sizeof attrs - used, "%s[%lu,\"0x%lx\"]", k ? "," : "",
                             (unsigned long)list[k].attribute, (unsigned long)list[k].value);
  pthread_mutex_lock(&lock);
  uintptr_t b = (uintptr_t)ptr;
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!ptr || !size || (!list && count)) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (find_alloc_locked(b)) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else {
    struct svm *r = find_svm_locked(b);
    if (!r) {
      if (nsvms == cap_svms && !(svms = realloc(svms, (cap_svms = cap_svms ? cap_svms * 2 : 16) * sizeof *svms)))
        st = HSA_STATUS_ERROR_OUT_OF_RESOURCES;
      else {
        r = &svms[nsvms++];
        *r = (struct svm){b, size, 0, 0};
      }
    }
    for (size_t k = 0; r && st == HSA_STATUS_SUCCESS && k < count; k++) {
      uint64_t at = list[k].attribute, v = list[k].value;
      if (at == HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG) {
        if (v == HSA_AMD_SVM_GLOBAL_FLAG_COARSE_GRAINED) r->coarse = 1;
        else if (v == HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED) r->coarse = 0;
        else st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
      } else if (at == HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE || at == HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE_IN_PLACE ||
                 at == HSA_AMD_SVM_ATTRIB_AGENT_NO_ACCESS) {
        int ai = agent_index((hsa_agent_t){v});
        if (ai < 0) st = HSA_STATUS_ERROR_INVALID_AGENT;
        else if (at == HSA_AMD_SVM_ATTRIB_AGENT_NO_ACCESS) r->accessible &= ~(1u << ai);
        else r->accessible |= 1u << ai;
      } else if (at > HSA_AMD_SVM_ATTRIB_READ_MOSTLY && at != 7) {
        st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
      } /* other attributes: accepted, no effect on the model */
    }
  }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_svm_attributes_set", st, "\"ptr\":%s,\"size\":%zu,\"attributes\":[%s]", PTRSTR(ps, ptr), size,
          attrs);
  return st;
}

EXPORT hsa_status_t hsa_amd_svm_attributes_get(void *ptr, size_t size, hsa_amd_svm_attribute_pair_t *list,
                                               size_t count) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  char ps[32];
  pthread_mutex_lock(&lock);
  struct svm *r = init_count ? find_svm_locked((uintptr_t)ptr) : NULL;
  if (init_count == 0) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!r || !list || !size) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else
    for (size_t k = 0; k < count; k++) {
      if (list[k].attribute == HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG)
        list[k].value = r->coarse ? HSA_AMD_SVM_GLOBAL_FLAG_COARSE_GRAINED : HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED;
      else if (list[k].attribute == HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE) {
        int ai = agent_index((hsa_agent_t){list[k].value});
        if (ai < 0) { st = HSA_STATUS_ERROR_INVALID_AGENT; break; }
        if (!(r->accessible & (1u << ai))) list[k].attribute = HSA_AMD_SVM_ATTRIB_AGENT_NO_ACCESS;
      }
    }
  pthread_mutex_unlock(&lock);
  calllog("hsa", "hsa_amd_svm_attributes_get", st, "\"ptr\":%s,\"size\":%zu", PTRSTR(ps, ptr), size);
  return st;
}

/* ---- the fault path (ROCR-Runtime src/core/runtime/runtime.cpp, rocm-6.2.4) ---- */

static const char *reason_text(uint32_t mask) {
  if (mask & HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT) return "Page not present or supervisor privilege";
  if (mask & HSA_AMD_MEMORY_FAULT_READ_ONLY) return "Write access to a read-only page";
  if (mask & HSA_AMD_MEMORY_FAULT_NX) return "Execute access to a page marked NX";
  if (mask & HSA_AMD_MEMORY_FAULT_HOST_ONLY) return "Host access only";
  if (mask & HSA_AMD_MEMORY_FAULT_DRAMECC) return "DRAM ECC failure";
  if (mask & HSA_AMD_MEMORY_FAULT_SRAMECC) return "SRAM ECC failure";
  if (mask & HSA_AMD_MEMORY_FAULT_HANG) return "Generic hang recovery";
  return "Unknown";
}

/* ROCr's event thread. Runtime::Load binds VMFaultHandler to the KFD
 * memory-fault event (runtime.cpp BindVmFaultHandler, rocm-6.2.4) and
 * AsyncEventsLoop runs it on the runtime's own thread, not the launching
 * one: the application goes on while the handlers run. */
static pthread_cond_t fault_cond = PTHREAD_COND_INITIALIZER;
static pthread_t event_thread;
static int event_thread_started;
static pid_t event_pid; /* a forked child has no event thread */
static int fault_state; /* 0 none, 1 posted, 2 a handler returned SUCCESS */
static hsa_amd_event_t fault_event;
static int fault_agent;

static void report_and_abort(void) {
  if (!env_is("HSA_ENABLE_VM_FAULT_MESSAGE", "0")) {
    const hsa_amd_gpu_memory_fault_info_t *f = &fault_event.memory_fault;
    fprintf(stderr, "Memory access fault by GPU node-%u (Agent handle: %p) on address %p%s. Reason: %s.\n",
            agents[fault_agent].node, (void *)(uintptr_t)f->agent.handle, (void *)(uintptr_t)f->virtual_address,
            (f->fault_reason_mask & HSA_AMD_MEMORY_FAULT_IMPRECISE) ? "(may not be exact address)" : "",
            reason_text(f->fault_reason_mask));
    fflush(stderr);
  }
  abort();
}

static void *event_loop(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  while (fault_state != 1) pthread_cond_wait(&fault_cond, &lock);
  int n = nhandlers;
  __typeof__(handlers[0]) copy[MAX_HANDLERS];
  memcpy(copy, handlers, sizeof copy);
  hsa_amd_event_t ev = fault_event;
  pthread_mutex_unlock(&lock);
  /* VMFaultHandler: every registered handler, in registration order; any
   * SUCCESS skips the message and the abort. */
  int handled = 0;
  for (int k = 0; k < n; k++)
    if (copy[k].cb(&ev, copy[k].data) == HSA_STATUS_SUCCESS) handled = 1;
  if (!handled) report_and_abort();
  pthread_mutex_lock(&lock);
  fault_state = 2;
  pthread_cond_broadcast(&fault_cond);
  pthread_mutex_unlock(&lock);
  return NULL; /* the fault signal is not re-armed: only the first fault is delivered */
}

/* Caller holds lock. Started with the runtime when a GPU exists and
 * interrupts are on (HSA_ENABLE_INTERRUPT != 0), as ROCr arms its handler. */
static void start_event_thread_locked(void) {
  if (event_thread_started || env_is("HSA_ENABLE_INTERRUPT", "0")) return;
  int gpus = 0;
  for (int i = 0; i < nagents; i++) gpus += agents[i].is_gpu;
  if (!gpus) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the application's signals stay the application's */
  if (pthread_create(&event_thread, NULL, event_loop, NULL) == 0) {
    pthread_detach(event_thread);
    event_thread_started = 1;
    event_pid = getpid();
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Caller holds lock. KFD has evicted the queues before the event arrives. */
static void post_fault_locked(int agent, uintptr_t va, uint32_t mask) {
  queues_dead = 1;
  if (fault_taken) return;
  fault_taken = 1;
  memset(&fault_event, 0, sizeof fault_event);
  fault_event.event_type = HSA_AMD_GPU_MEMORY_FAULT_EVENT;
  fault_event.memory_fault.agent = agent_handle(agent);
  fault_event.memory_fault.virtual_address = va & ~(PAGE - 1);
  fault_event.memory_fault.fault_reason_mask = mask;
  fault_agent = agent;
  if (!event_thread_started || event_pid != getpid()) { /* no handler armed: nothing reports it; the queue is just dead */
    fault_state = 2;
    return;
  }
  fault_state = 1;
  pthread_cond_broadcast(&fault_cond);
}

/* Waits until a posted fault has been handled (or the process has aborted). */
EXPORT void simgpu_hsa_wait_idle(void) {
  pthread_mutex_lock(&lock);
  while (fault_state == 1) pthread_cond_wait(&fault_cond, &lock);
  pthread_mutex_unlock(&lock);
}

static int is_rdna12(uint32_t v) { return v / 100 == 1001 || v / 100 == 1003; }

static int coherent_flags(uint32_t f) {
  return (f & (HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED | HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_EXTENDED_SCOPE_FINE_GRAINED)) != 0;
}

/* A kernel on `agent` touching [addr, addr+bytes). The launch itself always
 * succeeds; a fault is posted to the event thread. With `wait`, the caller
 * then waits for the kernel as hipDeviceSynchronize would. Returns
 * SIMGPU_LAUNCH_OK, _FAULTED (a fault happened and a handler suppressed it,
 * or not yet known without wait) or _DEAD (queues already gone). An
 * unsuppressed fault aborts the process on the event thread. */
EXPORT int simgpu_hsa_launch(hsa_agent_t agent_h, const void *addr, size_t bytes, int write) {
  unsigned rules = rules_mask();
  int wait = !(write & SIMGPU_LAUNCH_NOWAIT);
  write &= ~SIMGPU_LAUNCH_NOWAIT;
  pthread_mutex_lock(&lock);
  int ai = init_count ? agent_index(agent_h) : -1;
  if (ai < 0 || !agents[ai].is_gpu) { pthread_mutex_unlock(&lock); return SIMGPU_LAUNCH_BAD; }
  if (queues_dead) { pthread_mutex_unlock(&lock); return SIMGPU_LAUNCH_DEAD; }
  struct agent *a = &agents[ai];
  int first = !launched;
  launched = 1;
  uintptr_t start = (uintptr_t)addr, end = start + bytes;
  uintptr_t fault_va = 0;
  uint32_t mask = 0;
  /* override-family (ROCm#1880) and override-rdna1-as-rdna2 (ROCm#887): on the first launch. */
  uint32_t real_major = a->real_version / 10000, rep_major = a->report_version / 10000;
  if (first && (rules & RULE_OVERRIDE_FAMILY) && real_major != rep_major) { fault_va = start; mask = HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT; }
  if (!mask && first && (rules & RULE_OVERRIDE_RDNA1_AS_RDNA2) && a->real_version / 100 == 1001 &&
      a->report_version / 100 == 1003) { fault_va = start; mask = HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT; }
  for (uintptr_t p = start & ~(PAGE - 1); !mask && bytes && p < end; p += PAGE) {
    struct kobj *o = kfd_gpu_mapped(p, ai) ? kfd_find(p) : NULL;
    struct svm *sv = o ? NULL : find_svm_locked(p);
    int mapped = o || (sv && (sv->accessible & (1u << ai)));
    /* page-not-present: any byte of a page with no GPU mapping (kfd.c). */
    if (!mapped) {
      if (rules & RULE_PAGE_NOT_PRESENT) { fault_va = p < start ? start : p; mask = HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT; }
      else { pthread_mutex_unlock(&lock); return SIMGPU_LAUNCH_SKIPPED_UNMAPPED; }
      break;
    }
    /* seed-coherent (the seed's hypothesis, NOT confirmed upstream; off by
     * default): on real RDNA1/2, fine-grained/coherent memory (MTYPE_UC) faults. */
    int coh = o ? (o->pool >= 0 && coherent_flags(pools[o->pool].flags)) : !sv->coarse;
    if ((rules & RULE_SEED_COHERENT) && coh && is_rdna12(a->real_version)) {
      fault_va = p < start ? start : p;
      mask = HSA_AMD_MEMORY_FAULT_PAGE_NOT_PRESENT;
    }
  }
  if (mask) {
    post_fault_locked(ai, fault_va, mask);
    if (wait) while (fault_state == 1) pthread_cond_wait(&fault_cond, &lock);
    pthread_mutex_unlock(&lock);
    return SIMGPU_LAUNCH_FAULTED;
  }
  pthread_mutex_unlock(&lock);
  /* The kernel really touches the memory: padding must be readable. */
  static volatile unsigned char sink;
  if (write) memset((void *)start, 0xA5, bytes);
  else
    for (uintptr_t p = start; p < end; p += 64) sink ^= *(volatile unsigned char *)p;
  return SIMGPU_LAUNCH_OK;
}

EXPORT size_t simgpu_hsa_mapped_run(hsa_agent_t agent, const void *addr, size_t cap) {
  pthread_mutex_lock(&lock);
  int i = init_count ? agent_index(agent) : -1;
  size_t n = i >= 0 ? kfd_mapped_run((uintptr_t)addr, i, cap) : 0;
  pthread_mutex_unlock(&lock);
  return n;
}

EXPORT uint64_t simgpu_hsa_committed(hsa_agent_t agent) {
  pthread_mutex_lock(&lock);
  int i = init_count ? agent_index(agent) : -1;
  uint64_t n = i >= 0 ? kfd_committed(i) : 0;
  pthread_mutex_unlock(&lock);
  return n;
}

EXPORT int simgpu_hsa_queues_dead(void) {
  pthread_mutex_lock(&lock);
  int d = queues_dead;
  pthread_mutex_unlock(&lock);
  return d;
}

/* Pool flags of the allocation holding ptr, or 0 if none. */
EXPORT uint32_t simgpu_hsa_alloc_flags(const void *ptr) {
  pthread_mutex_lock(&lock);
  struct alloc *al = find_alloc_locked((uintptr_t)ptr);
  uint32_t f = al ? pools[al->pool].flags : 0;
  pthread_mutex_unlock(&lock);
  return f;
}

/* 1 if [ptr, ptr+n) lies inside one live allocation or SVM range, 0 if it is
 * not device memory at all, -1 if it starts inside one and runs past its end. */
EXPORT int simgpu_hsa_range_state(const void *ptr, size_t n) {
  pthread_mutex_lock(&lock);
  uintptr_t b = (uintptr_t)ptr;
  int r = 0;
  struct alloc *al = find_alloc_locked(b);
  struct svm *sv = al ? NULL : find_svm_locked(b);
  if (al) r = (b + n <= al->base + al->requested) ? 1 : -1;
  else if (sv) r = (b + n <= sv->base + sv->size) ? 1 : -1;
  pthread_mutex_unlock(&lock);
  return r;
}

/* Removes the SVM range starting at ptr (HIP's hipFree of managed memory). */
EXPORT int simgpu_hsa_svm_forget(const void *ptr, size_t *size) {
  pthread_mutex_lock(&lock);
  int found = 0;
  for (size_t k = 0; k < nsvms; k++)
    if (svms[k].base == (uintptr_t)ptr) {
      *size = svms[k].size;
      svms[k] = svms[--nsvms];
      found = 1;
      break;
    }
  pthread_mutex_unlock(&lock);
  return found;
}

EXPORT int simgpu_hsa_rocm_version(void) { return rocm_version(); }
