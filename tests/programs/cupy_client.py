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
