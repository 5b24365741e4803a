// Launchers kernels.cu shares with device_codec.cu (internal to libslicer_cuda.so).
#ifndef SLICER_LAUNCHERS_H
#define SLICER_LAUNCHERS_H

#include <cuda_runtime.h>

#include <cstdint>

namespace slicer
{

//! *flag |= 1 if any of x[0..n) is NaN or Inf (the codecs take finite values only).
void launchAnyNonFinite(float const* x, uint64_t n, unsigned int* flag, cudaStream_t stream);

//! out[i] = x[kept[i]] for i below *count (device); maxCount bounds the grid.
void launchGather(
    float const* x, int64_t const* kept, int64_t const* count, uint64_t maxCount, float* out, cudaStream_t stream);

} // namespace slicer

#endif // SLICER_LAUNCHERS_H
