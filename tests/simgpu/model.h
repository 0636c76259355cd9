/*
 * The memory model inside the simulated libhsa-runtime64.so.1, in two layers
 * that follow the real code's own split:
 *
 *   hsa_kfd.c  libhsakmt + KFD: objects with a GPU virtual address, a guard page
 *           after each, VA alignment, VRAM committed per agent.
 *           (ROCm/ROCT-Thunk-Interface src/fmm.c, rocm-5.2.3 … rocm-6.2.4)
 *   hsa_heap.c ROCr's fragment allocator for ordinary VRAM: 2 MiB blocks cut by
 *           a best-fit SimpleHeap, a block cache, balance() and trim().
 *           (ROCm/ROCR-Runtime src/core/util/simple_heap.h and
 *           src/core/runtime/amd_memory_region.cpp, rocm-5.2.3 … rocm-6.2.4)
 *
 * FAULT-MODEL.md lists every rule with its source. All functions here are
 * called with hsa.c's lock held; none is exported.
 */
#ifndef SIMGPU_MODEL_H
#define SIMGPU_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define HIDDEN __attribute__((visibility("hidden")))
#define SIM_PAGE 4096UL
#define SIM_BLOCK (2UL << 20) /* amd_memory_region.h: block_size_ = 2 * 1024 * 1024 */

/* ---- hsa_kfd.c ---- */
enum kobj_kind {
  KOBJ_DIRECT = 1, /* one hsaKmtAllocMemory object holding one allocation */
  KOBJ_BLOCK = 2,  /* a fragment-allocator block (hsa_heap.c) */
  KOBJ_VA = 3,     /* address space only (hsa_amd_vmem_address_reserve): not GPU-mapped */
  KOBJ_HANDLE = 4, /* physical memory without an address (hsa_amd_vmem_handle_create) */
};

struct kobj {
  uintptr_t va;    /* 0 for KOBJ_HANDLE */
  size_t size;     /* page multiple */
  int agent;       /* whose memory: a GPU for VRAM, the CPU for system memory */
  int vram;        /* counts against the agent's VRAM */
  int kind;
  uint64_t id;     /* stable handle for KOBJ_HANDLE */
  int pool;        /* hsa.c's pool index, for the fault rules */
  uint32_t gpus;   /* agents whose page tables map it (bit per agent index) */
  int released;    /* KOBJ_HANDLE released while still mapped: freed at its last unmap */
};

/* Reserves the simulated GPU address space; vram[i] is agent i's VRAM size
 * (0 for the CPU). Returns 0 on success. */
HIDDEN int kfd_init(int nagents, const uint64_t *vram);
/* A new object of `size` bytes (a page multiple). Returns its address (or,
 * for KOBJ_HANDLE, its id) or 0 when VRAM or address space is exhausted. */
HIDDEN uintptr_t kfd_alloc(int agent, int vram, size_t size, int kind);
/* The same at a fixed address (libhsakmt's FixedAddress), or 0 when the range is taken. */
HIDDEN uintptr_t kfd_alloc_at(int agent, int vram, size_t size, int kind, uintptr_t addr);
HIDDEN int kfd_free(uintptr_t va_or_id, int kind);
HIDDEN struct kobj *kfd_find(uintptr_t addr);        /* object whose [va, va+size) holds addr */
HIDDEN struct kobj *kfd_handle(uint64_t id);
HIDDEN uint64_t kfd_committed(int agent);             /* VRAM bytes KFD has handed out to the agent */
/* GPU mappings made by hsa_amd_vmem_map: [va, va+size) of a KOBJ_VA range
 * backed by a KOBJ_HANDLE. */
HIDDEN int kfd_map(uintptr_t va, size_t size, uint64_t handle);
HIDDEN int kfd_unmap(uintptr_t va, size_t size); /* frees a released handle's last mapping */
HIDDEN int kfd_set_access(uintptr_t va, size_t size, uint32_t gpus);
HIDDEN int kfd_handle_mapped(uint64_t handle);
/* 1 if GPU `agent` has a page table entry for the page holding addr. */
HIDDEN int kfd_gpu_mapped(uintptr_t addr, int agent);
/* Bytes GPU `agent` has mapped from addr on (0 if addr itself is not mapped), up to cap. */
HIDDEN size_t kfd_mapped_run(uintptr_t addr, int agent, size_t cap);
HIDDEN size_t kfd_guard_pages(void);

/* ---- hsa_heap.c: one SimpleHeap per VRAM pool ---- */
struct heap;
HIDDEN struct heap *heap_new(int pool);
/* bytes: a page multiple. Returns 0 when a needed block cannot be had even after trim. */
HIDDEN uintptr_t heap_alloc(struct heap *h, size_t bytes);
/* 1 if ptr was a heap allocation (now freed), 0 if the heap does not know it. */
HIDDEN int heap_free(struct heap *h, uintptr_t ptr);
HIDDEN void heap_trim(struct heap *h);
HIDDEN size_t heap_cache_size(const struct heap *h);

/* ---- hsa.c: ROCr's MemoryRegion::AllocateImpl without the fragment
 * allocator: a KFD object; on failure every heap of the agent is trimmed
 * (owner()->Trim()) and the allocation tried once more. */
HIDDEN uintptr_t region_alloc_direct(int pool, size_t size);

#endif
