/*
 * A training loop in miniature, the way PyTorch/MIOpen use HIP: weights and
 * activations in VRAM (hipMalloc), a pinned staging buffer for the data
 * loader (hipHostMalloc with default flags: coherent host memory), and a
 * convolution kernel whose weight loads read a little past the end of the
 * weights buffer (the MIOpen over-read of rocm-facts §7).
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

  const size_t weights_bytes = 3 * 3 * 64 * 64 * 4 + 100; /* a 3x3x64x64 fp32 filter bank, odd-sized */
  const size_t batch_bytes = 64 * 3 * 32 * 32 * 4;
  void *weights, *activations, *staging;
  CHECK(hipMalloc(&weights, weights_bytes));
  CHECK(hipMalloc(&activations, batch_bytes));
  CHECK(hipHostMalloc(&staging, batch_bytes, 0)); /* default flags: coherent */

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
  CHECK(hipFree(weights));
  printf("train_sim: training finished\n");
  return 0;
}
