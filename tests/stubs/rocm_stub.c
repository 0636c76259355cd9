/*
 * An honest stand-in for a ROCm library that the simulated runtime does not
 * provide (hipBLAS, rocBLAS, rocSOLVER, rocFFT, hipFFT, hipSPARSE, hipRAND,
 * RCCL, roctx, roctracer). It exists only so that a real client that links
 * the library (CuPy's ROCm wheels) can be loaded against the simulation: it
 * does no work, and every function answers the library's own "not supported"
 * status and says so on stderr. It carries the real soname, because the
 * dynamic linker looks libraries up by it; everything else about it says
 * "stub": its folder (target/clients/stubs-*), the symbol below, and the
 * line each call prints.
 *
 * Built by scripts/install-clients, once per library:
 *   -DSTUB_LIB='"libhipblas.so.0"' -DSTUB_STATUS=7
 *   -DSTUB_STATUS_NAME='"HIPBLAS_STATUS_NOT_SUPPORTED"'
 *   -DSTUB_NAMES='"names.h"'   one STUB(name) line per function the client
 *                              imports from the library (its undefined symbols)
 *   -DSTUB_ROCTX / -DSTUB_ROCTRACER / -DSTUB_NCCL for the few functions
 *   whose result is not a status (a depth, nothing, a string).
 * Status values, from the libraries' public headers: hipblasStatus_t
 * HIPBLAS_STATUS_NOT_SUPPORTED = 7; rocblas_status (rocBLAS, rocSOLVER)
 * rocblas_status_not_implemented = 2; rocfft_status_failure = 1; hipfftResult
 * HIPFFT_NOT_SUPPORTED = 16; hipsparseStatus_t HIPSPARSE_STATUS_NOT_SUPPORTED =
 * 10; hiprandStatus_t HIPRAND_STATUS_NOT_IMPLEMENTED = 1000; ncclResult_t has
 * no "not supported": ncclInternalError = 3.
 */
#include <stdio.h>

const char rocm_fix_simgpu_stub[] =
    STUB_LIB " is a stub of the simulated ROCm: every function answers " STUB_STATUS_NAME;

static int stub(const char *fn) {
  fprintf(stderr, "simgpu stub %s: %s -> %s\n", STUB_LIB, fn, STUB_STATUS_NAME);
  return STUB_STATUS;
}

/* Arguments are ignored: on x86-64 a function that takes none may be called
 * with any, and each of these returns its status in eax. */
#define STUB(name) \
  int name(void) { return stub(#name); }
#include STUB_NAMES

#ifdef STUB_ROCTX
/* roctx returns the nesting depth, or a negative value on error. */
void roctxMarkA(const char *message) {
  (void)message;
  stub("roctxMarkA");
}
int roctxRangePushA(const char *message) {
  (void)message;
  return stub("roctxRangePushA");
}
int roctxRangePop(void) { return stub("roctxRangePop"); }
#endif

#ifdef STUB_ROCTRACER
void roctracer_start(void) { stub("roctracer_start"); }
void roctracer_stop(void) { stub("roctracer_stop"); }
#endif

#ifdef STUB_NCCL
const char *ncclGetErrorString(int result) {
  (void)result;
  return "RCCL is a stub of the simulated ROCm (ncclInternalError)";
}
#endif
