"""A workload through AMD's hip-python (PyPI hip-python 6.2.0.499.16), a
real client no one here wrote: it opens libamdhip64.so with dlopen and
binds every function with dlsym. The kernel stand-in (simulated device
only) is called through ctypes on the same library.

  hip_python_client.py sim OVER   allocate coherent host memory and a 2 MiB
                                  device buffer (it ends at a block end),
                                  launch reads (over-reading it by OVER)
  hip_python_client.py matrix     a matrix of HIP calls, results printed on
                                  stdout (to be compared between runs with
                                  and without the preload, against a real
                                  runtime with no GPU); on stderr, how many
                                  went to functions rocm-fix hooks and what
                                  rocm-fix counted (rocm_fix_get_stats
                                  through ctypes) when it is there
"""
import ctypes
import sys

from hip import hip


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


hooked = 0


def show(name, result, hooks=False):
    global hooked
    hooked += hooks
    err = result[0] if isinstance(result, tuple) else result
    print(f"{name} -> {int(err)}", flush=True)
    return result


if sys.argv[1] == "sim":
    over = int(sys.argv[2], 0)
    lib = ctypes.CDLL("libamdhip64.so")
    lib.simgpuLaunchRead.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    _, host = show("hipHostMalloc", hip.hipHostMalloc(4096, 0))
    show("read", lib.simgpuLaunchRead(int(host), 0, 4096))
    _, dev = show("hipMalloc", hip.hipMalloc(0x200000))
    show("over-read", lib.simgpuLaunchRead(int(dev), 0, 0x200000 + over))
    show("hipFree", hip.hipFree(dev))
    show("hipHostFree", hip.hipHostFree(host))
else:
    show("hipInit", hip.hipInit(0))
    e, n = show("hipGetDeviceCount", hip.hipGetDeviceCount())
    print("count", n)
    show("hipMalloc", hip.hipMalloc(1 << 20), True)
    show("hipHostMalloc", hip.hipHostMalloc(4096, 0), True)
    show("hipHostMalloc nc", hip.hipHostMalloc(4096, 0x80000000), True)
    show("hipMallocManaged", hip.hipMallocManaged(4096, 1), True)
    show("hipExtMallocWithFlags", hip.hipExtMallocWithFlags(4096, 1), True)
    show("hipFree", hip.hipFree(None), True)
    show("hipDeviceSynchronize", hip.hipDeviceSynchronize())
    print(f"client: hooked calls {hooked}", file=sys.stderr)
    try:
        get = ctypes.CDLL(None).rocm_fix_get_stats
    except AttributeError:
        get = None  # rocm-fix is not in the process
    if get is not None:
        s = Stats()
        get(ctypes.byref(s), ctypes.sizeof(s))
        print(f"client: rocm_fix_get_stats intercepted {s.intercepted} "
              f"rewritten {s.rewritten} padded {s.padded}", file=sys.stderr)
