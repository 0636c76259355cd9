/* An independent witness of the calls rocm-fix would see, for programs whose
 * libraries call HIP on their own (Debian's rocBLAS, hipBLAS, MIOpen): a
 * preload, written apart from rocm-fix, that interposes the same exported
 * functions rocm-fix hooks (librocm_fix.so's HIP allocation functions and
 * hsa_init), counts every call to them whoever makes it, and forwards it
 * unchanged (dlsym RTLD_NEXT). At exit, on stderr:
 *   hip_witness: hooked calls N (hsa_init M) program P runtime R libraries L
 * N counts hsa_init too; P, R, L split N by the caller's object (its return
 * address: the executable, libamdhip64, any other shared library). (rocm-fix's HSA allocation hooks are left out: only
 * the runtime calls them, and with no device it does not.) Built against the release's real HIP headers (as C:
 * one prototype per name), so every argument is forwarded as declared. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <hip/hip_runtime_api.h>

static unsigned long calls, hsa_inits, by[3];

__attribute__((destructor)) static void report(void) {
  fprintf(stderr, "hip_witness: hooked calls %lu (hsa_init %lu) program %lu runtime %lu libraries %lu\n",
          __atomic_load_n(&calls, __ATOMIC_RELAXED), __atomic_load_n(&hsa_inits, __ATOMIC_RELAXED),
          __atomic_load_n(&by[0], __ATOMIC_RELAXED), __atomic_load_n(&by[1], __ATOMIC_RELAXED),
          __atomic_load_n(&by[2], __ATOMIC_RELAXED));
}

/* Counts a call returning to RET: which object made it. */
static void count(void *ret) {
  Dl_info info;
  int who = 0;
  if (dladdr(ret, &info) && info.dli_fname && strstr(info.dli_fname, ".so")) {
    who = strstr(info.dli_fname, "libamdhip64") ? 1 : 2;
  }
  __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&by[who], 1, __ATOMIC_RELAXED);
}

/* Counts the call and finds the next definition of NAME (the runtime's). */
#define NEXT(type, name)                                                                                     \
  count(__builtin_return_address(0));                                                                        \
  type real_ = (type)dlsym(RTLD_NEXT, name);                                                                 \
  if (!real_) return hipErrorNotInitialized

typedef hipError_t (*malloc_fn)(void **, size_t);
hipError_t hipMalloc(void **p, size_t n) {
  NEXT(malloc_fn, "hipMalloc");
  return real_(p, n);
}

typedef hipError_t (*free_fn)(void *);
hipError_t hipFree(void *p) {
  NEXT(free_fn, "hipFree");
  return real_(p);
}
hipError_t hipHostFree(void *p) {
  NEXT(free_fn, "hipHostFree");
  return real_(p);
}
hipError_t hipFreeHost(void *p) {
  NEXT(free_fn, "hipFreeHost");
  return real_(p);
}

typedef hipError_t (*flags_fn)(void **, size_t, unsigned);
hipError_t hipHostMalloc(void **p, size_t n, unsigned f) {
  NEXT(flags_fn, "hipHostMalloc");
  return real_(p, n, f);
}
hipError_t hipHostAlloc(void **p, size_t n, unsigned f) {
  NEXT(flags_fn, "hipHostAlloc");
  return real_(p, n, f);
}
hipError_t hipExtMallocWithFlags(void **p, size_t n, unsigned f) {
  NEXT(flags_fn, "hipExtMallocWithFlags");
  return real_(p, n, f);
}
hipError_t hipMallocManaged(void **p, size_t n, unsigned f) {
  NEXT(flags_fn, "hipMallocManaged");
  return real_(p, n, f);
}

typedef hipError_t (*advise_fn)(const void *, size_t, hipMemoryAdvise, int);
hipError_t hipMemAdvise(const void *p, size_t n, hipMemoryAdvise a, int d) {
  NEXT(advise_fn, "hipMemAdvise");
  return real_(p, n, a, d);
}

typedef hipError_t (*async_fn)(void **, size_t, hipStream_t);
hipError_t hipMallocAsync(void **p, size_t n, hipStream_t s) {
  NEXT(async_fn, "hipMallocAsync");
  return real_(p, n, s);
}
typedef hipError_t (*free_async_fn)(void *, hipStream_t);
hipError_t hipFreeAsync(void *p, hipStream_t s) {
  NEXT(free_async_fn, "hipFreeAsync");
  return real_(p, s);
}
typedef hipError_t (*pool_fn)(void **, size_t, hipMemPool_t, hipStream_t);
hipError_t hipMallocFromPoolAsync(void **p, size_t n, hipMemPool_t m, hipStream_t s) {
  NEXT(pool_fn, "hipMallocFromPoolAsync");
  return real_(p, n, m, s);
}

typedef hipError_t (*pitch_fn)(void **, size_t *, size_t, size_t);
hipError_t hipMallocPitch(void **p, size_t *pitch, size_t w, size_t h) {
  NEXT(pitch_fn, "hipMallocPitch");
  return real_(p, pitch, w, h);
}
typedef hipError_t (*alloc_pitch_fn)(hipDeviceptr_t *, size_t *, size_t, size_t, unsigned);
hipError_t hipMemAllocPitch(hipDeviceptr_t *p, size_t *pitch, size_t w, size_t h, unsigned e) {
  NEXT(alloc_pitch_fn, "hipMemAllocPitch");
  return real_(p, pitch, w, h, e);
}
typedef hipError_t (*malloc3d_fn)(hipPitchedPtr *, hipExtent);
hipError_t hipMalloc3D(hipPitchedPtr *p, hipExtent e) {
  NEXT(malloc3d_fn, "hipMalloc3D");
  return real_(p, e);
}

/* hsa_status_t hsa_init(void): HSA_STATUS_ERROR_NOT_INITIALIZED is 0x100B. */
typedef int (*hsa_init_fn)(void);
int hsa_init(void) {
  count(__builtin_return_address(0));
  __atomic_fetch_add(&hsa_inits, 1, __ATOMIC_RELAXED);
  hsa_init_fn real_ = (hsa_init_fn)dlsym(RTLD_NEXT, "hsa_init");
  return real_ ? real_() : 0x100B;
}
