"""A workload through AMD's hip-python 10 (PyPI hip-python 10.0.0.0.1.2 on
rocm-bindings-hip) and hip-python-interop 10.0.0.0.1.2 (the CUDA-named API,
`cuda.bindings.runtime`/`driver`), real clients no one here wrote. The
bindings open libamdhip64.so by name with dlopen(RTLD_NOW) on first use and
bind each function with dlsym. The kernel stand-in (simulated device only)
is called through ctypes on the same library.

  hip_python10_client.py sim API OVER
      API is `hip` (hip.hip.hipMalloc, hipHostMalloc), `cudart`
      (cuda.bindings.runtime.cudaMalloc, cudaHostAlloc) or `cudrv`
      (cuda.bindings.driver.cuMemAlloc, cuMemHostAlloc): coherent host
      memory, then a 2 MiB device buffer (it ends at a block end), read over
      its end by OVER bytes; then rocm-fix's counters (rocm_fix_get_stats
      through ctypes) when the preload is there.
      --raise (last): a failed call raises, as PyTorch on ROCm 7 raises a GPU
      fault (hipErrorIllegalAddress, ROCm/pytorch#3336): uncaught, Python
      prints the traceback and exits 1.

  hip_python10_client.py real
      Against a REAL runtime with no GPU (Debian's 5.2, 6.4.3, 7.2.4): a
      matrix of calls through all three APIs, every result on stdout (to be
      compared between runs with and without the preload); on stderr, how
      many of them went to functions rocm-fix hooks and what rocm-fix counted.
"""
import ctypes
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


def show(name, result):
    err = result[0] if isinstance(result, tuple) else result
    print(f"{name} -> {int(err)}", flush=True)
    if int(err) != 0 and sys.argv[-1] == "--raise":
        lib = ctypes.CDLL("libamdhip64.so")
        lib.hipGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"HIP error: {lib.hipGetErrorString(int(err)).decode()}")
    return result


def rocm_fix_stats():
    """The preload's counters, or None when rocm-fix is not in the process."""
    try:
        get = ctypes.CDLL(None).rocm_fix_get_stats
    except AttributeError:
        return None
    s = Stats()
    get(ctypes.byref(s), ctypes.sizeof(s))
    return s


def real_matrix():
    from hip import hip
    from cuda.bindings import driver as cudrv
    from cuda.bindings import runtime as cudart

    hooked = 0

    def call(name, fn, hooks=False):
        nonlocal hooked
        hooked += hooks
        r = fn()
        err = r[0] if isinstance(r, tuple) else r
        print(f"{name} -> {int(err)}", flush=True)
        return r

    call("hipInit(0)", lambda: hip.hipInit(0))
    _, n = call("hipGetDeviceCount", hip.hipGetDeviceCount)
    print("count", n)
    call("hipSetDevice(0)", lambda: hip.hipSetDevice(0))
    call("hipMalloc(1 MiB)", lambda: hip.hipMalloc(1 << 20), True)
    call("hipMalloc(0)", lambda: hip.hipMalloc(0), True)
    call("hipHostMalloc(coherent)", lambda: hip.hipHostMalloc(4096, 0), True)
    call("hipHostMalloc(non-coherent)", lambda: hip.hipHostMalloc(4096, 0x80000000), True)
    call("hipMallocManaged", lambda: hip.hipMallocManaged(4096, 1), True)
    call("hipExtMallocWithFlags", lambda: hip.hipExtMallocWithFlags(4096, 1), True)
    call("hipFree(None)", lambda: hip.hipFree(None), True)
    call("hipHostFree(None)", lambda: hip.hipHostFree(None), True)
    call("hipDeviceSynchronize", hip.hipDeviceSynchronize)
    call("hipGetLastError", hip.hipGetLastError)
    call("cudaGetDeviceCount", cudart.cudaGetDeviceCount)
    call("cudaMalloc", lambda: cudart.cudaMalloc(4096), True)
    call("cudaHostAlloc", lambda: cudart.cudaHostAlloc(4096, 0), True)
    call("cudaFree(None)", lambda: cudart.cudaFree(None), True)
    call("cudaFreeHost(None)", lambda: cudart.cudaFreeHost(None), True)
    call("cuInit(0)", lambda: cudrv.cuInit(0))
    call("cuMemAlloc", lambda: cudrv.cuMemAlloc(4096), True)
    call("cuMemHostAlloc", lambda: cudrv.cuMemHostAlloc(4096, 0), True)
    call("cuMemFree(0)", lambda: cudrv.cuMemFree(0), True)
    print(f"client: hooked calls {hooked}", file=sys.stderr)
    s = rocm_fix_stats()
    if s is not None:
        print(f"client: rocm_fix_get_stats intercepted {s.intercepted} "
              f"rewritten {s.rewritten} padded {s.padded}", file=sys.stderr)


if sys.argv[1] == "real":
    real_matrix()
    sys.exit(0)

api, over = sys.argv[2], int(sys.argv[3], 0)
if api == "hip":
    from hip import hip

    host_alloc = lambda n: hip.hipHostMalloc(n, 0)  # noqa: E731 (coherent)
    dev_alloc, free, host_free = hip.hipMalloc, hip.hipFree, hip.hipHostFree
    names = ("hipHostMalloc", "hipMalloc", "hipFree", "hipHostFree")
elif api == "cudart":
    from cuda.bindings import runtime as cudart

    host_alloc = lambda n: cudart.cudaHostAlloc(n, 0)  # noqa: E731
    dev_alloc, free, host_free = cudart.cudaMalloc, cudart.cudaFree, cudart.cudaFreeHost
    names = ("cudaHostAlloc", "cudaMalloc", "cudaFree", "cudaFreeHost")
else:
    from cuda.bindings import driver as cudrv

    show("cuInit", cudrv.cuInit(0))
    host_alloc = lambda n: cudrv.cuMemHostAlloc(n, 0)  # noqa: E731
    dev_alloc, free, host_free = cudrv.cuMemAlloc, cudrv.cuMemFree, cudrv.cuMemFreeHost
    names = ("cuMemHostAlloc", "cuMemAlloc", "cuMemFree", "cuMemFreeHost")

lib = ctypes.CDLL("libamdhip64.so")
lib.simgpuLaunchRead.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
_, host = show(names[0], host_alloc(4096))
show("read", lib.simgpuLaunchRead(int(host), 0, 4096))
_, dev = show(names[1], dev_alloc(0x200000))
show("over-read", lib.simgpuLaunchRead(int(dev), 0, 0x200000 + over))
show(names[2], free(dev))
show(names[3], host_free(host))
s = rocm_fix_stats()
if s is None:
    print("rocm-fix: not loaded")
else:
    print(f"rocm-fix {s.version.decode()}: intercepted {s.intercepted} "
          f"rewritten {s.rewritten} padded {s.padded}")
