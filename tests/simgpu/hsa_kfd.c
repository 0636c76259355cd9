/*
 * libhsakmt's view of GPU memory, as far as it decides which GPU addresses
 * fault. Source: ROCm/ROCT-Thunk-Interface src/fmm.c at rocm-5.2.3 and
 * rocm-6.2.4 (the same rules; from ROCm 6.3 libhsakmt lives in ROCR-Runtime
 * libhsakmt/src/fmm.c with them unchanged):
 *
 * - kfd-object: every hsaKmtAllocMemory call makes one object; the GPU page
 *   tables map the whole object (hsaKmtMapMemoryToGPUNodes(ptr, size)), so
 *   every page of it is readable by a kernel, whichever part of it ROCr has
 *   handed out.
 * - kfd-guard-page: "Leave at least one guard page after every object"
 *   (vm_align_area_size: size + guard_pages * PAGE_SIZE); guard_pages comes
 *   from HSA_SVM_GUARD_PAGES, default 1. Nothing is ever mapped there, so a
 *   GPU access to it faults.
 * - kfd-va-align: "Align big buffers to the next power-of-2" up to
 *   PAGE_SIZE << HSA_MAX_VA_ALIGN (default order 9 = 2 MiB):
 *   while (align < 2 MiB && size >= align << 1) align <<= 1.
 *   (mmap_aperture_allocate_aligned, the x86_64 default aperture.)
 *
 * Placement within the address space: the real library asks the kernel's
 * mmap for a padded range (mmap_allocate_aligned); the simulation places
 * objects first-fit, bottom-up, in a range it reserved once. Which pages
 * next to an object are GPU-mapped does not depend on that choice: only
 * another object could map them, and the guard page keeps it away.
 *
 * VRAM accounting: the bytes of every VRAM object (blocks, direct objects,
 * physical handles) count against the agent's local_mem_size from the KFD
 * topology; an allocation past it fails (KFD's -ENOMEM).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "model.h"

#define MAX_AGENTS_KFD 16
#define APERTURE_SIZE (512ULL << 30)

static uintptr_t aperture_base, aperture_end;
static struct kobj *objs; /* sorted by va: objects that have an address */
static size_t nobjs, cap_objs;
static struct kobj *handles; /* KOBJ_HANDLE: physical memory without an address */
static size_t nhandles, cap_handles;
static uint64_t next_handle_id = 1;
static struct vmap { uintptr_t va; size_t size; uint64_t handle; uint32_t gpus; } *maps; /* sorted by va */
static size_t nmaps, cap_maps;
static uint64_t vram_size[MAX_AGENTS_KFD], vram_used[MAX_AGENTS_KFD];
static size_t guard_pages = 1;
static unsigned max_va_align_order = 9;

static int grow(void **arr, size_t *cap, size_t n, size_t elem) {
  if (n < *cap) return 0;
  size_t nc = *cap ? *cap * 2 : 64;
  void *p = realloc(*arr, nc * elem);
  if (!p) return -1;
  *arr = p;
  *cap = nc;
  return 0;
}

HIDDEN size_t kfd_guard_pages(void) { return guard_pages; }

HIDDEN int kfd_init(int nagents, const uint64_t *vram) {
  for (int i = 0; i < nagents && i < MAX_AGENTS_KFD; i++) vram_size[i] = vram[i];
  if (aperture_base) return 0;
  /* fmm.c: HSA_SVM_GUARD_PAGES (default 1) and HSA_MAX_VA_ALIGN (default 9). */
  const char *g = getenv("HSA_SVM_GUARD_PAGES");
  unsigned v;
  if (g && sscanf(g, "%u", &v) == 1) guard_pages = v;
  const char *a = getenv("HSA_MAX_VA_ALIGN");
  if (a && sscanf(a, "%u", &v) == 1 && v < 30) max_va_align_order = v;
  /* As large as the host lets us (valgrind, for one, refuses 512 GiB). */
  size_t want = APERTURE_SIZE;
  void *m = MAP_FAILED;
  for (; want >= (8ULL << 30) && m == MAP_FAILED; want /= 2)
    m = mmap(NULL, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return -1;
  want *= 2; /* the size that succeeded */
  /* Start on a 1 GiB boundary so that addresses are aligned as KFD's are. */
  aperture_base = ((uintptr_t)m + (1UL << 30) - 1) & ~((1UL << 30) - 1);
  aperture_end = (uintptr_t)m + want;
  return 0;
}

static size_t lower_index(uintptr_t va) { /* first object with objs[i].va >= va */
  size_t lo = 0, hi = nobjs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (objs[mid].va < va) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

HIDDEN struct kobj *kfd_find(uintptr_t addr) {
  size_t i = lower_index(addr + 1);
  if (i == 0) return NULL;
  struct kobj *o = &objs[i - 1];
  return addr < o->va + o->size ? o : NULL;
}

HIDDEN struct kobj *kfd_handle(uint64_t id) {
  for (size_t i = 0; i < nhandles; i++)
    if (handles[i].id == id) return &handles[i];
  return NULL;
}

HIDDEN uint64_t kfd_committed(int agent) {
  return agent >= 0 && agent < MAX_AGENTS_KFD ? vram_used[agent] : 0;
}

/* First fit, bottom-up, with fmm.c's alignment and guard pages. */
static uintptr_t place(size_t size) {
  uintptr_t align = SIM_PAGE, max_align = SIM_PAGE << max_va_align_order;
  while (align < max_align && size >= (align << 1)) align <<= 1;
  size_t area = size + guard_pages * SIM_PAGE;
  uintptr_t start = (aperture_base + align - 1) & ~(align - 1);
  for (size_t i = 0; i < nobjs; i++) {
    if (objs[i].va >= start && objs[i].va - start >= area) break;
    uintptr_t end = objs[i].va + objs[i].size + guard_pages * SIM_PAGE;
    if (end > start) start = (end + align - 1) & ~(align - 1);
  }
  if (start + area > aperture_end || start + area < start) return 0;
  return start;
}

/* kfd-fixed-address: a request for a given address (hsaKmtAllocMemoryAlign
 * with FixedAddress, as hsa_amd_vmem_address_reserve asks first). In the
 * mmap aperture, the x86_64 default, it is mmap(address, size, PROT_NONE,
 * MAP_FIXED_NOREPLACE) with no padding: it succeeds wherever no mapping is,
 * the unmapped guard gap after another object included (fmm.c
 * mmap_aperture_allocate_aligned, `if (address)`). In the reserved aperture
 * (HSA_RESERVE_SVM=1) guard pages belong to their object's area, so an
 * address inside one is refused (reserved_aperture_allocate_aligned: "Required
 * address is not free or overlaps"). */
static int fixed_fits(uintptr_t addr, size_t size) {
  if (addr < aperture_base || addr + size > aperture_end || addr + size < addr) return 0;
  const char *r = getenv("HSA_RESERVE_SVM");
  size_t guard = (r && !strcmp(r, "1")) ? guard_pages * SIM_PAGE : 0;
  for (size_t i = 0; i < nobjs; i++) {
    uintptr_t a = objs[i].va, b = objs[i].va + objs[i].size + guard;
    if (addr < b && a < addr + size) return 0;
  }
  return 1;
}

static uintptr_t place(size_t size);

static uintptr_t alloc_common(int agent, int vram, size_t size, int kind, uintptr_t fixed);

HIDDEN uintptr_t kfd_alloc_at(int agent, int vram, size_t size, int kind, uintptr_t addr) {
  if (!addr || (addr & (SIM_PAGE - 1)) || !fixed_fits(addr, size)) return 0;
  return alloc_common(agent, vram, size, kind, addr);
}

HIDDEN uintptr_t kfd_alloc(int agent, int vram, size_t size, int kind) {
  return alloc_common(agent, vram, size, kind, 0);
}

static uintptr_t alloc_common(int agent, int vram, size_t size, int kind, uintptr_t fixed) {
  if (!size || (size & (SIM_PAGE - 1)) || agent < 0 || agent >= MAX_AGENTS_KFD) return 0;
  if (vram && kind != KOBJ_VA && (vram_used[agent] + size > vram_size[agent] || vram_used[agent] + size < size))
    return 0; /* KFD: out of VRAM */
  if (kind == KOBJ_HANDLE) {
    if (grow((void **)&handles, &cap_handles, nhandles, sizeof *handles)) return 0;
    uint64_t id = next_handle_id++;
    handles[nhandles++] = (struct kobj){0, size, agent, vram, kind, id, -1, 0, 0};
    vram_used[agent] += vram ? size : 0;
    return (uintptr_t)id;
  }
  if (grow((void **)&objs, &cap_objs, nobjs, sizeof *objs)) return 0;
  uintptr_t va = fixed ? fixed : place(size);
  if (!va) return 0;
  if (kind != KOBJ_VA && mprotect((void *)va, size, PROT_READ | PROT_WRITE) != 0) return 0;
  size_t i = lower_index(va);
  memmove(&objs[i + 1], &objs[i], (nobjs - i) * sizeof *objs);
  /* VRAM is mapped for its own GPU at once; system memory allocated with
   * AllocateRestrict (every hsa_amd_memory_pool_allocate) for nobody until
   * hsa_amd_agents_allow_access (amd_memory_region.cpp AllocateImpl). */
  objs[i] = (struct kobj){va, size, agent, vram, kind, 0, -1, (vram && kind != KOBJ_VA) ? 1u << agent : 0, 0};
  nobjs++;
  if (vram && kind != KOBJ_VA) vram_used[agent] += size;
  return va;
}

/* Gives the pages back and keeps the range reserved (fmm.c
 * reserved_aperture_release maps it PROT_NONE again). */
static void discard_pages(uintptr_t va, size_t size) {
  mmap((void *)va, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

HIDDEN int kfd_free(uintptr_t va_or_id, int kind) {
  if (kind == KOBJ_HANDLE) {
    for (size_t i = 0; i < nhandles; i++)
      if (handles[i].id == va_or_id) {
        if (handles[i].vram) vram_used[handles[i].agent] -= handles[i].size;
        handles[i] = handles[--nhandles];
        return 0;
      }
    return -1;
  }
  size_t i = lower_index(va_or_id);
  if (i == nobjs || objs[i].va != va_or_id || objs[i].kind != kind) return -1;
  struct kobj o = objs[i];
  if (o.kind == KOBJ_VA) {
    for (size_t k = 0; k < nmaps; k++)
      if (maps[k].va >= o.va && maps[k].va < o.va + o.size) return -1; /* still mapped */
  } else {
    discard_pages(o.va, o.size);
    if (o.vram) vram_used[o.agent] -= o.size;
  }
  memmove(&objs[i], &objs[i + 1], (nobjs - i - 1) * sizeof *objs);
  nobjs--;
  return 0;
}

HIDDEN int kfd_map(uintptr_t va, size_t size, uint64_t handle) {
  struct kobj *r = kfd_find(va);
  struct kobj *h = kfd_handle(handle);
  if (!r || r->kind != KOBJ_VA || !h || va + size > r->va + r->size || size > h->size) return -1;
  for (size_t k = 0; k < nmaps; k++)
    if (va < maps[k].va + maps[k].size && maps[k].va < va + size) return -1; /* overlaps a mapping */
  if (grow((void **)&maps, &cap_maps, nmaps, sizeof *maps)) return -1;
  if (mprotect((void *)va, size, PROT_READ | PROT_WRITE) != 0) return -1;
  size_t i = 0;
  while (i < nmaps && maps[i].va < va) i++;
  memmove(&maps[i + 1], &maps[i], (nmaps - i) * sizeof *maps);
  maps[i] = (struct vmap){va, size, handle, 0};
  nmaps++;
  return 0;
}

HIDDEN int kfd_unmap(uintptr_t va, size_t size) {
  for (size_t k = 0; k < nmaps; k++)
    if (maps[k].va == va && maps[k].size == size) {
      uint64_t handle = maps[k].handle;
      discard_pages(va, size);
      memmove(&maps[k], &maps[k + 1], (nmaps - k - 1) * sizeof *maps);
      nmaps--;
      struct kobj *h = kfd_handle(handle);
      if (h && h->released && !kfd_handle_mapped(handle)) kfd_free(handle, KOBJ_HANDLE);
      return 0;
    }
  return -1;
}

/* hsa_amd_vmem_set_access: the GPU page tables get the mapping only now. */
HIDDEN int kfd_set_access(uintptr_t va, size_t size, uint32_t gpus) {
  /* The range must be covered exactly by contiguous mappings (runtime.cpp VMemorySetAccess). */
  uintptr_t p = va;
  for (size_t k = 0; k < nmaps && p < va + size; k++)
    if (maps[k].va == p) p += maps[k].size;
  if (p != va + size) return -1;
  for (size_t k = 0; k < nmaps; k++)
    if (maps[k].va >= va && maps[k].va + maps[k].size <= va + size) maps[k].gpus = gpus;
  return 0;
}

HIDDEN int kfd_handle_mapped(uint64_t handle) {
  for (size_t k = 0; k < nmaps; k++)
    if (maps[k].handle == handle) return 1;
  return 0;
}

static const struct vmap *find_map(uintptr_t addr) {
  for (size_t k = 0; k < nmaps; k++)
    if (addr >= maps[k].va && addr < maps[k].va + maps[k].size) return &maps[k];
  return NULL;
}

HIDDEN int kfd_gpu_mapped(uintptr_t addr, int agent) {
  struct kobj *o = kfd_find(addr);
  if (!o) return 0;
  if (o->kind != KOBJ_VA) return (o->gpus >> agent) & 1;
  const struct vmap *m = find_map(addr);
  return m && ((m->gpus >> agent) & 1);
}

HIDDEN size_t kfd_mapped_run(uintptr_t addr, int agent, size_t cap) {
  size_t run = 0;
  uintptr_t p = addr;
  while (run < cap) {
    struct kobj *o = kfd_find(p);
    uintptr_t end;
    if (!o) break;
    if (o->kind == KOBJ_VA) {
      const struct vmap *m = find_map(p);
      if (!m || !((m->gpus >> agent) & 1)) break;
      end = m->va + m->size;
    } else {
      if (!((o->gpus >> agent) & 1)) break;
      end = o->va + o->size;
    }
    run += end - p;
    p = end;
  }
  return run < cap ? run : cap;
}
