// The probe kernels of `rocm-fix validate` (src/command/validate.rs).
//
// Built by scripts/build-probes with Debian's HIP toolchain (clang's AMDGPU
// backend) into one clang offload bundle, target/rocm-fix/probes/probes.co,
// holding a code object for every target the toolchain supports among
// gfx1010-1012, gfx1030-1036 and gfx1100-1103. `rocm-fix validate` loads it
// at run time with hipModuleLoadData and launches the kernels by name with
// hipModuleLaunchKernel, so that they run on whatever ROCm the machine has.
//
// Plain clang builtins only (no HIP headers, no device libraries: -nogpuinc
// -nogpulib), so that every target builds with the bookworm toolchain, whose
// device libraries stop at gfx1036. Names are extern "C": the command and the
// simulated runtime (tests/simgpu/hip.c) find them by these names, and the
// arguments are part of that contract (FAULT-MODEL.md, "Probe kernels").

#define KERNEL extern "C" __attribute__((global)) __attribute__((used)) __attribute__((amdgpu_flat_work_group_size(1, 256)))

static __attribute__((device)) unsigned tid() { return __builtin_amdgcn_workitem_id_x(); }
static __attribute__((device)) unsigned nthreads() { return __builtin_amdgcn_workgroup_size_x(); }

// Reads every 32-bit word of [p, p + words) (one workgroup, threads striding)
// and xors them into *out. A read past the end of a buffer is a launch with
// more words than the buffer holds.
KERNEL void rocm_fix_probe_read(const unsigned *p, unsigned long words, unsigned *out) {
  unsigned acc = 0;
  for (unsigned long i = tid(); i < words; i += nthreads()) acc ^= __builtin_nontemporal_load(p + i);
  __atomic_fetch_xor(out, acc, __ATOMIC_RELAXED);
}

// Writes value to every 32-bit word of [p, p + words).
KERNEL void rocm_fix_probe_write(unsigned *p, unsigned long words, unsigned value) {
  for (unsigned long i = tid(); i < words; i += nthreads()) p[i] = value;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

// The handshake of a program that polls host memory a kernel writes: thread 0
// stores 1 to *flag (clang's __atomic builtins are system scope on AMDGPU), then waits up to `spins` reads of *answer
// for the host to answer (non-zero), then stores 2 to *flag if it saw the
// answer or 3 if it gave up. A host that only sees *flag once the kernel has
// ended finds 3: the flag did not reach it while the kernel ran.
KERNEL void rocm_fix_probe_signal(unsigned *flag, const unsigned *answer, unsigned long spins) {
  if (tid() != 0) return;
  __atomic_store_n(flag, 1u, __ATOMIC_RELEASE);
  unsigned seen = 0;
  for (unsigned long i = 0; i < spins && !seen; i++)
    seen = __atomic_load_n(answer, __ATOMIC_ACQUIRE);
  __atomic_store_n(flag, seen ? 2u : 3u, __ATOMIC_RELEASE);
}
