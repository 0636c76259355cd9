/* torch_replay: replays a tensor trace (tests/programs/torch_trace.py) through
 * a model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp,
 * hipified for ROCm) on top of hipMalloc/hipFree, and reports the workload's
 * peak. Usage: torch_replay [TRACE]   (default: standard input)
 *
 * Modelled (default PYTORCH_HIP_ALLOC_CONF, one stream, one device; see
 * tests/programs/BENCH-WORKLOAD.md for the sources):
 *   round_size: below kMinBlockSize (512) -> 512, else up to a multiple of 512;
 *   pools: size <= kSmallSize (1 MiB) small, else large;
 *   get_allocation_size: small -> kSmallBuffer (2 MiB); < kMinLargeAlloc (10 MiB)
 *     -> kLargeBuffer (20 MiB); else up to a multiple of kRoundLarge (2 MiB);
 *   get_free_block: the free block of the pool with the smallest (size, address)
 *     of at least the size (std::set lower_bound); max_split_size is unlimited,
 *     so its checks never refuse a block;
 *   should_split: small pool: remaining >= 512; large pool: remaining > 1 MiB;
 *     the allocation takes the front, the remainder goes back to the pool;
 *   free_block: merge with a free prev/next block of the same segment;
 *   malloc: free block, else hipMalloc(alloc_size), else
 *     (release_available_cached_blocks does nothing with an unlimited
 *     max_split_size) release_cached_blocks (hipFree every cached segment that
 *     is not split, large pool then small, in (size, address) order) and one
 *     more hipMalloc; then out of memory.
 * Segments are never returned otherwise (no emptyCache in a training loop).
 *
 * Prints one line of key=value pairs; exits 0 when the trace completed,
 * 3 on out of memory, 2 on a bad trace, 1 on another HIP error.
 *   status       ok | oom
 *   peak_committed  max over the run of total - free from hipMemGetInfo,
 *                   read after each hipMalloc
 *   peak_reserved   bytes of live segments at that peak (torch's reserved)
 *   peak_segments   live segments (hipMalloc allocations) at that peak
 *   cov4k, cov64k   live segments at that peak whose end (ptr + size) is
 *                   followed by >= 4 KiB / 64 KiB of mapped memory
 *                   (simgpuMappedBytes), as "covered/segments"
 *   hipmalloc, hipfree, retries   calls made; retries = release_cached_blocks
 *   rocm_fix_intercepted  rocm_fix_get_stats().intercepted when librocm_fix.so
 *                   is loaded (looked up with dlsym), else -1
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "simgpu.h"
#include "rocm_fix.h"

#define kMinBlockSize ((size_t)512)
#define kSmallSize ((size_t)1048576)
#define kSmallBuffer ((size_t)2097152)
#define kLargeBuffer ((size_t)20971520)
#define kMinLargeAlloc ((size_t)10485760)
#define kRoundLarge ((size_t)2097152)

typedef struct Block {
  uintptr_t ptr;
  size_t size;
  int pool; /* 0 small, 1 large */
  int allocated;
  struct Block *prev, *next;
  long free_idx; /* index in its pool's free list, -1 when not there */
} Block;

typedef struct {
  Block **v;
  long n, cap;
} Vec;

static void vpush(Vec *s, Block *b) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v);
    if (!s->v) abort();
  }
  s->v[s->n++] = b;
}

static Vec pools[2];   /* free blocks */

static void pool_insert(Block *b) {
  b->free_idx = pools[b->pool].n;
  vpush(&pools[b->pool], b);
}

static void pool_erase(Block *b) {
  Vec *p = &pools[b->pool];
  Block *last = p->v[--p->n];
  p->v[b->free_idx] = last;
  last->free_idx = b->free_idx;
  b->free_idx = -1;
}

/* Segment table: head pointer and the size given to hipMalloc. */
typedef struct {
  uintptr_t ptr;
  size_t size;
} Seg;
static Seg *segs;
static long nsegs, capsegs;

static void seg_add(uintptr_t p, size_t s) {
  if (nsegs == capsegs) {
    capsegs = capsegs ? capsegs * 2 : 64;
    segs = realloc(segs, (size_t)capsegs * sizeof *segs);
    if (!segs) abort();
  }
  segs[nsegs++] = (Seg){p, s};
}

static void seg_remove(uintptr_t p) {
  for (long i = 0; i < nsegs; i++)
    if (segs[i].ptr == p) {
      segs[i] = segs[--nsegs];
      return;
    }
  abort();
}

static long n_hipmalloc, n_hipfree, n_retries;
static size_t peak_committed, peak_reserved, reserved;
static long peak_segments, peak_cov4k, peak_cov64k;

static void measure(void) {
  size_t fr = 0, total = 0;
  if (hipMemGetInfo(&fr, &total) != hipSuccess) {
    fprintf(stderr, "torch_replay: hipMemGetInfo failed\n");
    exit(1);
  }
  size_t committed = total - fr;
  if (committed <= peak_committed) return;
  peak_committed = committed;
  peak_reserved = reserved;
  peak_segments = nsegs;
  peak_cov4k = peak_cov64k = 0;
  for (long i = 0; i < nsegs; i++) {
    size_t m = simgpuMappedBytes((const void *)(segs[i].ptr + segs[i].size), 65536);
    peak_cov4k += m >= 4096;
    peak_cov64k += m >= 65536;
  }
}

static Block *alloc_block(size_t alloc_size, int pool) {
  void *p = NULL;
  n_hipmalloc++;
  hipError_t e = hipMalloc(&p, alloc_size);
  if (e == hipErrorOutOfMemory) {
    (void)hipGetLastError(); /* alloc_block forgives cudaErrorMemoryAllocation */
    return NULL;
  }
  if (e != hipSuccess || !p) {
    fprintf(stderr, "torch_replay: hipMalloc(%zu) failed: %d\n", alloc_size, e);
    exit(1);
  }
  Block *b = calloc(1, sizeof *b);
  if (!b) abort();
  b->ptr = (uintptr_t)p;
  b->size = alloc_size;
  b->pool = pool;
  b->free_idx = -1;
  seg_add(b->ptr, alloc_size);
  reserved += alloc_size;
  measure();
  return b;
}

static int cmp_block(const void *a, const void *b) {
  const Block *x = *(Block *const *)a, *y = *(Block *const *)b;
  if (x->size != y->size) return x->size < y->size ? -1 : 1;
  return x->ptr < y->ptr ? -1 : x->ptr > y->ptr;
}

/* release_cached_blocks -> release_blocks(large), release_blocks(small) */
static void release_cached_blocks(void) {
  n_retries++;
  for (int pool = 1; pool >= 0; pool--) {
    Vec *p = &pools[pool];
    Block **copy = malloc((size_t)(p->n ? p->n : 1) * sizeof *copy);
    if (!copy) abort();
    long n = 0;
    for (long i = 0; i < p->n; i++)
      if (!p->v[i]->prev && !p->v[i]->next) copy[n++] = p->v[i];
    qsort(copy, (size_t)n, sizeof *copy, cmp_block);
    for (long i = 0; i < n; i++) {
      Block *b = copy[i];
      n_hipfree++;
      if (hipFree((void *)b->ptr) != hipSuccess) {
        fprintf(stderr, "torch_replay: hipFree failed\n");
        exit(1);
      }
      seg_remove(b->ptr);
      reserved -= b->size;
      pool_erase(b);
      free(b);
    }
    free(copy);
  }
}

static Block *get_free_block(int pool, size_t size) {
  Vec *p = &pools[pool];
  Block *best = NULL;
  for (long i = 0; i < p->n; i++) {
    Block *b = p->v[i];
    if (b->size < size) continue;
    if (!best || b->size < best->size || (b->size == best->size && b->ptr < best->ptr)) best = b;
  }
  if (best) pool_erase(best);
  return best;
}

static Block *torch_malloc(size_t orig) {
  size_t size = orig < kMinBlockSize ? kMinBlockSize : (orig + kMinBlockSize - 1) / kMinBlockSize * kMinBlockSize;
  int pool = size <= kSmallSize ? 0 : 1;
  size_t alloc_size = size <= kSmallSize      ? kSmallBuffer
                      : size < kMinLargeAlloc ? kLargeBuffer
                                              : (size + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
  Block *b = get_free_block(pool, size);
  if (!b) b = alloc_block(alloc_size, pool);
  if (!b) {
    release_cached_blocks();
    b = alloc_block(alloc_size, pool);
  }
  if (!b) return NULL;
  size_t remaining = b->size - size;
  int split = pool == 0 ? remaining >= kMinBlockSize : remaining > kSmallSize;
  if (split) {
    Block *rem = b;
    b = calloc(1, sizeof *b);
    if (!b) abort();
    b->ptr = rem->ptr;
    b->size = size;
    b->pool = pool;
    b->prev = rem->prev;
    if (b->prev) b->prev->next = b;
    b->next = rem;
    rem->prev = b;
    rem->ptr += size;
    rem->size -= size;
    pool_insert(rem);
  }
  b->allocated = 1;
  b->free_idx = -1;
  return b;
}

static void try_merge(Block *dst, Block *src) {
  if (!src || src->allocated) return;
  pool_erase(src);
  if (dst->prev == src) {
    dst->ptr = src->ptr;
    dst->prev = src->prev;
    if (dst->prev) dst->prev->next = dst;
  } else {
    dst->next = src->next;
    if (dst->next) dst->next->prev = dst;
  }
  dst->size += src->size;
  free(src);
}

static void torch_free(Block *b) {
  b->allocated = 0;
  try_merge(b, b->prev);
  try_merge(b, b->next);
  pool_insert(b);
}

static long intercepted(void) {
  int (*get)(struct rocm_fix_stats *, size_t) =
      (int (*)(struct rocm_fix_stats *, size_t))dlsym(RTLD_DEFAULT, "rocm_fix_get_stats");
  if (!get) return -1;
  struct rocm_fix_stats st;
  memset(&st, 0, sizeof st);
  get(&st, sizeof st);
  return (long)st.intercepted;
}

static void report(const char *status, long steps) {
  printf("status=%s steps=%ld peak_committed=%zu peak_reserved=%zu peak_segments=%ld cov4k=%ld/%ld "
         "cov64k=%ld/%ld hipmalloc=%ld hipfree=%ld retries=%ld rocm_fix_intercepted=%ld\n",
         status, steps, peak_committed, peak_reserved, peak_segments, peak_cov4k, peak_segments, peak_cov64k,
         peak_segments, n_hipmalloc, n_hipfree, n_retries, intercepted());
  fflush(stdout);
}

int main(int argc, char **argv) {
  FILE *in = stdin;
  if (argc > 1 && !(in = fopen(argv[1], "r"))) {
    perror(argv[1]);
    return 2;
  }
  Block **live = NULL;
  long cap = 0, steps = 0;
  char line[256];
  long lineno = 0;
  while (fgets(line, sizeof line, in)) {
    lineno++;
    long id;
    unsigned long long bytes;
    if (line[0] == '#' || line[0] == '\n') continue;
    if (sscanf(line, "s %ld", &id) == 1) {
      steps = id;
    } else if (sscanf(line, "a %ld %llu", &id, &bytes) == 2 && id >= 0) {
      if (id >= cap) {
        long nc = cap ? cap : 1024;
        while (nc <= id) nc *= 2;
        live = realloc(live, (size_t)nc * sizeof *live);
        if (!live) abort();
        memset(live + cap, 0, (size_t)(nc - cap) * sizeof *live);
        cap = nc;
      }
      if (live[id]) goto bad;
      live[id] = torch_malloc((size_t)bytes);
      if (!live[id]) {
        report("oom", steps);
        return 3;
      }
    } else if (sscanf(line, "f %ld", &id) == 1 && id >= 0) {
      if (id >= cap || !live[id]) goto bad;
      torch_free(live[id]);
      live[id] = NULL;
    } else {
      goto bad;
    }
  }
  report("ok", steps);
  return 0;
bad:
  fprintf(stderr, "torch_replay: bad trace line %ld: %s", lineno, line);
  return 2;
}
