"""CuPy's memory pool on the simulated device: a real client no one here
wrote (PyPI cupy-rocm-5-0 13.3.0, cupy-rocm-7-0 14.2.0). Its extension
modules link libamdhip64.so.5/.7 and call hipMalloc through their PLT; the
pool (cupy.cuda.MemoryPool, the default) asks hipMalloc for a segment and
hands out pieces of it. The kernel stand-in is called through ctypes on the
same library.

  cupy_client.py OVER [--lazy]
      one 2 MiB array (its pool segment is one 2 MiB hipMalloc, which ends at
      a block end), freed back to the pool and taken again (no new hipMalloc),
      then a read OVER bytes past the segment's end; rocm-fix's counters
      (rocm_fix_get_stats through ctypes) when the preload is there.
      --lazy: load CuPy's modules with RTLD_LAZY (cupy-rocm-5-0 13.3.0 does not
      import against ROCm 5.2 otherwise: see README).

  cupy_client.py real
      Against a REAL runtime with no GPU (Debian's 7.2.4): the pool's and
      CuPy's own runtime calls, each outcome on stdout (to be compared between
      runs with and without the preload); on stderr, how many of them went to
      functions rocm-fix hooks and what rocm-fix counted.
"""
import ctypes
import os
import sys


class Stats(ctypes.Structure):
    _fields_ = [
        ("intercepted", ctypes.c_uint64),
        ("rewritten", ctypes.c_uint64),
        ("padded", ctypes.c_uint64),
        ("padded_bytes", ctypes.c_uint64),
        ("retried", ctypes.c_uint64),
        ("faults", ctypes.c_uint64),
        ("version", ctypes.c_char * 16),
        ("live_allocations", ctypes.c_uint64),
    ]


def stats():
    try:
        get = ctypes.CDLL(None).rocm_fix_get_stats
    except AttributeError:
        return "rocm-fix: not loaded"
    s = Stats()
    get(ctypes.byref(s), ctypes.sizeof(s))
    return f"rocm-fix: intercepted {s.intercepted} padded {s.padded} live {s.live_allocations}"


def real():
    import cupy
    from cupy.cuda import runtime

    hooked = 0

    def call(name, fn, hooks=False):
        nonlocal hooked
        hooked += hooks
        try:
            print(f"{name} -> {fn()!r}", flush=True)
        except Exception as e:  # CuPy raises the runtime's error
            print(f"{name} -> {type(e).__name__}: {e}", flush=True)

    print(f"cupy {cupy.__version__} runtime {runtime.runtimeGetVersion()}", flush=True)
    call("getDeviceCount", runtime.getDeviceCount)
    call("pool: cupy.empty(2 MiB)", lambda: cupy.empty(0x200000, dtype=cupy.uint8).data.ptr)
    call("pool: total bytes", lambda: cupy.get_default_memory_pool().total_bytes())
    call("pool: MemoryPool().malloc(2 MiB)", lambda: cupy.cuda.MemoryPool().malloc(0x200000).ptr)
    call("runtime.malloc(2 MiB)", lambda: runtime.malloc(0x200000), True)
    call("runtime.hostAlloc(4096)", lambda: runtime.hostAlloc(4096, 0), True)
    call("runtime.mallocManaged(4096)", lambda: runtime.mallocManaged(4096, 1), True)
    call("runtime.free(0)", lambda: runtime.free(0), True)
    call("runtime.freeHost(0)", lambda: runtime.freeHost(0), True)
    print(f"client: hooked calls {hooked}", file=sys.stderr)
    print(f"client: {stats()}", file=sys.stderr)


if sys.argv[1] == "real":
    real()
    sys.exit(0)
over = int(sys.argv[1], 0)
if "--lazy" in sys.argv:
    sys.setdlopenflags(os.RTLD_LAZY)
import cupy  # noqa: E402

print(f"cupy {cupy.__version__} runtime {cupy.cuda.runtime.runtimeGetVersion()}", flush=True)
pool = cupy.get_default_memory_pool()
a = cupy.empty(0x200000, dtype=cupy.uint8)
seg = a.data.ptr
print(f"pool segment {a.data.mem.size} bytes, pool total {pool.total_bytes()}", flush=True)
print(stats(), flush=True)
del a
b = cupy.empty(0x200000, dtype=cupy.uint8)
print(f"reused {b.data.ptr == seg}, pool total {pool.total_bytes()}", flush=True)
print(stats(), flush=True)
hip = ctypes.CDLL("libamdhip64.so")
hip.simgpuLaunchRead.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
print(f"over-read -> {hip.simgpuLaunchRead(seg, 0, 0x200000 + over)}", flush=True)
print(stats(), flush=True)
