// What kernels.cu shares with device_codec.cu (internal to libslicer_cuda.so).
#ifndef SLICER_LAUNCHERS_H
#define SLICER_LAUNCHERS_H

#include "slicer_codec.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace slicer
{

//! *flag |= 1 if any of x[0..n) is NaN or Inf (the codecs take finite values only).
void launchAnyNonFinite(float const* x, uint64_t n, unsigned int* flag, cudaStream_t stream);

//! out[i] = x[kept[i]] for i below *count (device); maxCount bounds the grid.
void launchGather(
    float const* x, int64_t const* kept, int64_t const* count, uint64_t maxCount, float* out, cudaStream_t stream);

//! Bytes selectKeptValues takes from the front of a workspace for n elements.
size_t keptSelectionBytes(uint64_t n);

/*
 * The encoders' common front half, ATKF on the device: checks x is finite, selects
 * the kept indices (ascending) and gathers their values, into buffers carved from
 * the front of `workspace` (keptSelectionBytes(n) of it). keptCount comes back to the
 * host (the stream is synchronised); SLICER_ERR_ARGUMENT for NaN or Inf in x.
 */
slicer_status selectKeptValues(float const* x, uint64_t n, slicer_knobs const& knobs, void* workspace,
    int64_t** kept, float** values, uint64_t* keptCount, cudaStream_t stream);

} // namespace slicer

#endif // SLICER_LAUNCHERS_H
