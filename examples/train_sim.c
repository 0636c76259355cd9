/*
 * A training loop in miniature, the way PyTorch/MIOpen use HIP. PyTorch's
 * caching allocator asks HIP for 2 MiB segments for small tensors and hands
 * out tensors from them, rounded to 512 bytes (c10/cuda/CUDACachingAllocator
 * .cpp, kSmallBuffer, kMinBlockSize); the weights tensor here is the last one
 * in its segment, so it ends where the segment ends. ROCr gives a 2 MiB
 * request a 2 MiB block of its own, and the page after a block is unmapped
 * (libhsakmt's guard page). A convolution kernel whose weight loads read a
 * little past the end of the weights (the over-read MIOpen PR #2546 fixed on
 * Navi21) then faults. A pinned staging buffer (hipHostMalloc, default
 * flags) feeds the batches.
 *
 * On the simulated RX 5700 XT (gfx1010) this crashes with ROCr's
 * "Memory access fault … Page not present" message unless rocm-fix is
 * preloaded. Build: see scripts/demo.
 */
#include <stdio.h>
#include <stdlib.h>
#include "simgpu.h"

#define CHECK(call)                                                                  \
  do {                                                                               \
    hipError_t e_ = (call);                                                          \
    if (e_ != hipSuccess) {                                                          \
      fprintf(stderr, "train_sim: %s failed: %s\n", #call, hipGetErrorString(e_));   \
      return 1;                                                                      \
    }                                                                                \
  } while (0)

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives an abort */
  int epochs = argc > 1 ? atoi(argv[1]) : 3;
  size_t overread = argc > 2 ? strtoul(argv[2], NULL, 0) : 256; /* bytes past the weights */
  hipDeviceProp_tR0600 prop;
  CHECK(hipGetDevicePropertiesR0600(&prop, 0));
  printf("train_sim: device 0 is %s (%s)\n", prop.name, prop.gcnArchName);

  const size_t weights_bytes = 3 * 3 * 64 * 64 * 4; /* a 3x3x64x64 fp32 filter bank */
  const size_t batch_bytes = 64 * 3 * 32 * 32 * 4;
  const size_t segment_bytes = 2 << 20; /* kSmallBuffer */
  void *segment, *activations, *staging;
  CHECK(hipMalloc(&segment, segment_bytes));
  /* The caching allocator's last block in the segment: its end is the segment's. */
  char *weights = (char *)segment + segment_bytes - ((weights_bytes + 511) & ~(size_t)511);
  CHECK(hipMalloc(&activations, batch_bytes));
  CHECK(hipHostMalloc(&staging, batch_bytes, 0)); /* default flags: coherent */
  size_t free_bytes = 0, total = 0;
  CHECK(hipMemGetInfo(&free_bytes, &total));
  printf("train_sim: VRAM in use %zu KiB of %zu MiB; %zu bytes mapped past the end of the weights\n",
         (total - free_bytes) >> 10, total >> 20, simgpuMappedBytes(weights + weights_bytes, 1 << 20));

  for (int epoch = 1; epoch <= epochs; epoch++) {
    for (int step = 0; step < 4; step++) {
      CHECK(simgpuLaunchWrite(staging, 0, batch_bytes));                  /* data loader fills the batch */
      CHECK(simgpuLaunchRead(staging, 0, batch_bytes));                   /* H2D copy kernel reads it */
      CHECK(simgpuLaunchWrite(activations, 0, batch_bytes));
      CHECK(simgpuLaunchRead(weights, 0, weights_bytes + overread));      /* conv weight loads over-read */
    }
    CHECK(hipDeviceSynchronize());
    printf("train_sim: epoch %d/%d done\n", epoch, epochs);
    fflush(stdout);
  }
  CHECK(hipHostFree(staging));
  CHECK(hipFree(activations));
  CHECK(hipFree(segment));
  printf("train_sim: training finished\n");
  return 0;
}
