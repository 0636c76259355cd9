"""A workload through AMD's hip-python (PyPI hip-python 6.2.0.499.16), a
real client no one here wrote: it opens libamdhip64.so with dlopen and
binds every function with dlsym. The kernel stand-in (simulated device
only) is called through ctypes on the same library.

  hip_python_client.py sim OVER   allocate coherent host memory and a 2 MiB
                                  device buffer (it ends at a block end),
                                  launch reads (over-reading it by OVER)
  hip_python_client.py matrix     a matrix of HIP calls, results printed
"""
import ctypes
import sys

from hip import hip


def show(name, result):
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
    show("hipMalloc", hip.hipMalloc(1 << 20))
    show("hipHostMalloc", hip.hipHostMalloc(4096, 0))
    show("hipHostMalloc nc", hip.hipHostMalloc(4096, 0x80000000))
    show("hipMallocManaged", hip.hipMallocManaged(4096, 1))
    show("hipExtMallocWithFlags", hip.hipExtMallocWithFlags(4096, 1))
    show("hipFree", hip.hipFree(None))
    show("hipDeviceSynchronize", hip.hipDeviceSynchronize())
