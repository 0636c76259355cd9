"""A Python ctypes client of HIP: the library is opened with dlopen
(RTLD_LOCAL) and every function bound with dlsym. Same workload as
dlclient.c: coherent host memory, then an over-read of argv[1] bytes past a
2 MiB hipMalloc buffer (it ends at a block end)."""
import ctypes
import sys

over = int(sys.argv[1], 0) if len(sys.argv) > 1 else 0
hip = ctypes.CDLL("libamdhip64.so")
hip.simgpuLaunchRead.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
p, d = ctypes.c_void_p(), ctypes.c_void_p()
print("hipHostMalloc", hip.hipHostMalloc(ctypes.byref(p), ctypes.c_size_t(4096), ctypes.c_uint(0)), flush=True)
print("read", hip.simgpuLaunchRead(p, 0, 4096), flush=True)
print("hipMalloc", hip.hipMalloc(ctypes.byref(d), ctypes.c_size_t(0x200000)), flush=True)
print("over-read", hip.simgpuLaunchRead(d, 0, 0x200000 + over), flush=True)
