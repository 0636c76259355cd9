/*
 * ROCr's fragment allocator for ordinary VRAM, rule for rule. Sources:
 * ROCm/ROCR-Runtime src/core/util/simple_heap.h (SimpleHeap) and
 * src/core/runtime/amd_memory_region.cpp (BlockAllocator, AllocateImpl) at
 * rocm-5.2.3 and rocm-6.2.4, which agree; ROCm 7.x keeps simple_heap.h.
 *
 * - heap-best-fit: a request takes the smallest free fragment of at least
 *   its size (free_list_ is a multimap<size, address>; lower_bound(bytes);
 *   among equal sizes the one freed first) and is cut from its front; the
 *   rest stays free.
 * - heap-block: with no fitting fragment, a request below the block size
 *   takes the most recently cached block (block_cache_.back()); otherwise a
 *   new block of AlignUp(bytes, 2 MiB) from KFD (BlockAllocator::alloc). So an
 *   exactly-2 MiB request always takes a fresh KFD block.
 * - heap-discard: a request above the block size gets its own block; the
 *   block is discarded at once (discardBlock): its tail is never handed out
 *   and the block goes back to KFD when the request is freed.
 * - heap-merge: a freed fragment merges with free neighbours in its block; a
 *   block left with one free fragment leaves the heap: back to KFD if
 *   discarded, else into the block cache, still mapped.
 * - heap-balance: after a block is cached or discarded, cached blocks are
 *   released from the oldest while more than one is cached and the cache
 *   holds more than twice what is in use.
 * - heap-trim: on a failed KFD allocation the agent's heaps release their
 *   whole cache and the allocation is tried once more
 *   (MemoryRegion::AllocateImpl: owner()->Trim(), then retry).
 */
#include <stdlib.h>
#include <string.h>

#include "model.h"

struct frag {
  uintptr_t base;
  uintptr_t block;
  size_t size;
  unsigned char free, discard;
};
struct fl_entry { size_t size; uintptr_t base; };
struct blk { uintptr_t base; size_t length; };

struct heap {
  int pool;
  struct frag *frags;   /* every fragment of every block in use, sorted by base */
  size_t nfrags, cap_frags;
  struct fl_entry *fl;  /* free_list_: sorted by size, equal sizes in insertion order */
  size_t nfl, cap_fl;
  struct blk *blocks;   /* block_list_ keys, sorted by base */
  size_t nblocks, cap_blocks;
  struct blk *cache;    /* block_cache_: a deque, oldest first */
  size_t ncache, cap_cache;
  size_t in_use_size, cache_size;
};

static int grow(void **arr, size_t *cap, size_t n, size_t elem) {
  if (n < *cap) return 0;
  size_t nc = *cap ? *cap * 2 : 32;
  void *p = realloc(*arr, nc * elem);
  if (!p) return -1;
  *arr = p;
  *cap = nc;
  return 0;
}

HIDDEN struct heap *heap_new(int pool) {
  struct heap *h = calloc(1, sizeof *h);
  if (h) h->pool = pool;
  return h;
}

HIDDEN size_t heap_cache_size(const struct heap *h) { return h->cache_size; }

/* ---- free list ---- */
static void fl_insert(struct heap *h, size_t size, uintptr_t base) {
  size_t lo = 0, hi = h->nfl; /* upper bound of size: after equal sizes */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->fl[mid].size <= size) lo = mid + 1;
    else hi = mid;
  }
  memmove(&h->fl[lo + 1], &h->fl[lo], (h->nfl - lo) * sizeof *h->fl);
  h->fl[lo] = (struct fl_entry){size, base};
  h->nfl++;
}
static size_t fl_lower_bound(const struct heap *h, size_t size) {
  size_t lo = 0, hi = h->nfl;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->fl[mid].size < size) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
static void fl_erase(struct heap *h, size_t size, uintptr_t base) {
  for (size_t i = fl_lower_bound(h, size); i < h->nfl && h->fl[i].size == size; i++)
    if (h->fl[i].base == base) {
      memmove(&h->fl[i], &h->fl[i + 1], (h->nfl - i - 1) * sizeof *h->fl);
      h->nfl--;
      return;
    }
}

/* ---- fragments ---- */
static size_t frag_index(const struct heap *h, uintptr_t base) { /* first frag with base >= base */
  size_t lo = 0, hi = h->nfrags;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->frags[mid].base < base) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
static void frag_insert(struct heap *h, struct frag f) {
  size_t i = frag_index(h, f.base);
  memmove(&h->frags[i + 1], &h->frags[i], (h->nfrags - i) * sizeof *h->frags);
  h->frags[i] = f;
  h->nfrags++;
}
static void frag_erase(struct heap *h, size_t i) {
  memmove(&h->frags[i], &h->frags[i + 1], (h->nfrags - i - 1) * sizeof *h->frags);
  h->nfrags--;
}
/* A used fragment's free-list entry does not exist; a free, discarded one's was removed. */
static void remove_fl_entry(struct heap *h, const struct frag *f) {
  if (f->free && !f->discard) fl_erase(h, f->size, f->base);
}

/* ---- blocks ---- */
static size_t block_index(const struct heap *h, uintptr_t base) {
  size_t lo = 0, hi = h->nblocks;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (h->blocks[mid].base < base) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static void block_release(uintptr_t base) { kfd_free(base, KOBJ_BLOCK); }

static void balance(struct heap *h) {
  while (h->ncache > 1 && h->cache_size > h->in_use_size * 2) {
    block_release(h->cache[0].base);
    h->cache_size -= h->cache[0].length;
    memmove(&h->cache[0], &h->cache[1], (h->ncache - 1) * sizeof *h->cache);
    h->ncache--;
  }
}

HIDDEN void heap_trim(struct heap *h) {
  for (size_t i = 0; i < h->ncache; i++) block_release(h->cache[i].base);
  h->ncache = 0;
  h->cache_size = 0;
}

static void discard_block(struct heap *h, uintptr_t block) {
  size_t size = 0;
  for (size_t i = frag_index(h, block); i < h->nfrags && h->frags[i].block == block; i++) {
    remove_fl_entry(h, &h->frags[i]);
    h->frags[i].discard = 1;
    size += h->frags[i].size;
  }
  h->in_use_size -= size;
  balance(h);
}

HIDDEN uintptr_t heap_alloc(struct heap *h, size_t bytes) {
  if (grow((void **)&h->frags, &h->cap_frags, h->nfrags + 1, sizeof *h->frags) ||
      grow((void **)&h->fl, &h->cap_fl, h->nfl + 1, sizeof *h->fl) ||
      grow((void **)&h->blocks, &h->cap_blocks, h->nblocks, sizeof *h->blocks))
    return 0;
  size_t k = fl_lower_bound(h, bytes);
  if (k < h->nfl) { /* heap-best-fit */
    uintptr_t base = h->fl[k].base;
    size_t size = h->fl[k].size;
    memmove(&h->fl[k], &h->fl[k + 1], (h->nfl - k - 1) * sizeof *h->fl);
    h->nfl--;
    size_t i = frag_index(h, base);
    struct frag *f = &h->frags[i];
    f->size = bytes;
    f->free = 0;
    if (size > bytes) {
      uintptr_t block = f->block;
      fl_insert(h, size - bytes, base + bytes);
      frag_insert(h, (struct frag){base + bytes, block, size - bytes, 1, 0});
    }
    return base;
  }
  uintptr_t base;
  size_t size;
  if (bytes < SIM_BLOCK && h->ncache > 0) { /* heap-block: the newest cached block */
    base = h->cache[h->ncache - 1].base;
    size = h->cache[h->ncache - 1].length;
    h->ncache--;
    h->cache_size -= size;
  } else {
    size = (bytes + SIM_BLOCK - 1) & ~(SIM_BLOCK - 1);
    base = region_alloc_direct(h->pool, size);
    if (!base) return 0; /* BlockAllocator::alloc throws: HSA_STATUS_ERROR_OUT_OF_RESOURCES */
    struct kobj *o = kfd_find(base);
    if (o) o->kind = KOBJ_BLOCK;
  }
  h->in_use_size += size;
  if (size > bytes) {
    fl_insert(h, size - bytes, base + bytes);
    frag_insert(h, (struct frag){base + bytes, base, size - bytes, 1, 0});
  }
  size_t b = block_index(h, base);
  memmove(&h->blocks[b + 1], &h->blocks[b], (h->nblocks - b) * sizeof *h->blocks);
  h->blocks[b] = (struct blk){base, size};
  h->nblocks++;
  frag_insert(h, (struct frag){base, base, bytes, 0, 0});
  if (bytes > SIM_BLOCK) discard_block(h, base); /* heap-discard */
  return base;
}

HIDDEN int heap_free(struct heap *h, uintptr_t ptr) {
  size_t b = block_index(h, ptr + 1);
  if (b == 0) return 0;
  uintptr_t block = h->blocks[b - 1].base;
  size_t length = h->blocks[b - 1].length;
  if (ptr >= block + length) return 0;
  size_t i = frag_index(h, ptr);
  if (i == h->nfrags || h->frags[i].base != ptr || h->frags[i].free) return 0;
  int discard = h->frags[i].discard;
  if (i > 0 && h->frags[i - 1].block == block && h->frags[i - 1].free) { /* heap-merge, below */
    remove_fl_entry(h, &h->frags[i - 1]);
    h->frags[i - 1].size += h->frags[i].size;
    frag_erase(h, i);
    i--;
  }
  if (i + 1 < h->nfrags && h->frags[i + 1].block == block && h->frags[i + 1].free) { /* and above */
    remove_fl_entry(h, &h->frags[i + 1]);
    h->frags[i].size += h->frags[i + 1].size;
    frag_erase(h, i + 1);
  }
  int alone = (i == 0 || h->frags[i - 1].block != block) &&
              (i + 1 == h->nfrags || h->frags[i + 1].block != block);
  if (alone) {
    frag_erase(h, i);
    memmove(&h->blocks[b - 1], &h->blocks[b], (h->nblocks - b) * sizeof *h->blocks);
    h->nblocks--;
    if (discard || grow((void **)&h->cache, &h->cap_cache, h->ncache, sizeof *h->cache)) {
      block_release(block);
      if (!discard) h->in_use_size -= length;
    } else {
      h->cache[h->ncache++] = (struct blk){block, length};
      h->cache_size += length;
      h->in_use_size -= length;
    }
    balance(h);
    return 1;
  }
  if (discard) return 1;
  fl_insert(h, h->frags[i].size, h->frags[i].base);
  h->frags[i].free = 1;
  return 1;
}
