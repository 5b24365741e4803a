// SLICER codec kernels: ATKF scores, the k-th largest score by radix select,
// the kept set (ties to the lower index) by stream compaction, per-block AIQ
// quantisation and the decoder's dequantise-and-scatter.
//
// Launchers take raw pointers and a cudaStream_t (no framework types); the
// workspace each needs is given by a *_workspace_bytes query so that callers
// allocate once. Float arithmetic follows the codec's contract: round-to-nearest
// products and sums, never fused (the library is built with --fmad=false, and the
// AIQ paths use the explicit __f*_rn intrinsics).
//
// slicer_cuda_encode chains them into a whole payload: ATKF on the device, the
// O(k) rest on the host (slicer_encode_from_kept, tested byte for byte on the CPU).
// slicer_cuda_decode mirrors it: the O(k) parse on the host (slicer_decode_sparse_host,
// the same validation as the numpy decoder), the O(T) zero-fill and scatter on the device.
//
// Status: compiled for sm_75..sm_90 on every CI run; not yet run on a GPU (no
// device in the development workplace). The numpy reference is the spec these
// must match bit for bit.

#include "codec_math.h"
#include "launchers.h"
#include "slicer_codec.h"

#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace slicer
{
namespace
{

constexpr int kTHREADS = 256;
constexpr int kRADIX_BITS = 8;
constexpr int kRADIX_BINS = 1 << kRADIX_BITS;

int blocksFor(size_t n)
{
    size_t const blocks = (n + kTHREADS - 1) / kTHREADS;
    return static_cast<int>(blocks < 65535 * 32 ? (blocks == 0 ? 1 : blocks) : 65535 * 32);
}

//! score = x/(1+λ) for x > 0, -x/(1-λ) for x < 0, 0 for zeros (IEEE division).
__global__ void atkfScoresKernel(float const* x, size_t n, float posScale, float negScale, float* scores)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        float const v = x[i];
        scores[i] = v > 0.0f ? __fdiv_rn(v, posScale) : (v < 0.0f ? __fdiv_rn(-v, negScale) : 0.0f);
    }
}

//! Histogram of one radix digit over the scores whose higher digits equal `prefix`.
__global__ void radixHistogramKernel(
    float const* scores, size_t n, uint32_t prefix, uint32_t prefixMask, int shift, unsigned int* histogram)
{
    __shared__ unsigned int local[kRADIX_BINS];
    for (int b = threadIdx.x; b < kRADIX_BINS; b += blockDim.x)
    {
        local[b] = 0;
    }
    __syncthreads();
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        // Non-negative floats order like their bit patterns.
        uint32_t const bits = __float_as_uint(scores[i]);
        if ((bits & prefixMask) == prefix)
        {
            atomicAdd(&local[(bits >> shift) & (kRADIX_BINS - 1)], 1U);
        }
    }
    __syncthreads();
    for (int b = threadIdx.x; b < kRADIX_BINS; b += blockDim.x)
    {
        if (local[b])
        {
            atomicAdd(&histogram[b], local[b]);
        }
    }
}

//! Pick the digit holding the k-th largest; carry the rank left to find inside it.
__global__ void radixPickKernel(unsigned int const* histogram, uint32_t* state, int shift)
{
    // state: [0] prefix, [1] rank still to skip (1-based k among the remaining)
    uint32_t rank = state[1];
    for (int digit = kRADIX_BINS - 1; digit >= 0; --digit)
    {
        uint32_t const count = histogram[digit];
        if (rank <= count)
        {
            state[0] |= static_cast<uint32_t>(digit) << shift;
            state[1] = rank;
            return;
        }
        rank -= count;
    }
}

//! flags[i] = 1 for scores above the k-th, and for ties at it (ranked by index later).
__global__ void markKeptKernel(float const* scores, size_t n, uint32_t const* state, uint8_t* above, uint8_t* tie)
{
    float const kth = __uint_as_float(state[0]);
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        float const s = scores[i];
        above[i] = (s > kth && s > 0.0f) ? 1 : 0;
        tie[i] = (s == kth && s > 0.0f) ? 1 : 0;
    }
}

//! Keep the first `need` ties (lowest indices), by their exclusive prefix rank.
__global__ void keepFirstTiesKernel(
    uint8_t* above, uint8_t const* tie, unsigned int const* tieRank, size_t n, uint32_t const* need)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        if (tie[i] && tieRank[i] < *need)
        {
            above[i] = 1;
        }
    }
}

//! AIQ: code = min(rint((v - lo) / step), levels); constant groups (step 0) get 0.
__global__ void quantizeKernel(float const* magnitudes, uint32_t const* groupOf, float const* lo,
    float const* step, uint32_t const* levels, size_t n, uint32_t* codes)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        uint32_t const g = groupOf[i];
        float const s = step[g] > 0.0f ? step[g] : 1.0f;
        float const c = rintf(__fdiv_rn(__fsub_rn(magnitudes[i], lo[g]), s));
        codes[i] = static_cast<uint32_t>(fminf(c, static_cast<float>(levels[g])));
    }
}

//! Decoder: out[position] = sign · (lo + code·step), product then sum, clamped finite.
__global__ void dequantizeScatterKernel(uint32_t const* codes, int64_t const* positions, uint32_t const* groupOf,
    float const* lo, float const* step, uint8_t const* negative, size_t n, float* out)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        uint32_t const g = groupOf[i];
        float const magnitude = clampFinite(__fadd_rn(__fmul_rn(static_cast<float>(codes[i]), step[g]), lo[g]));
        out[positions[i]] = negative[i] ? -magnitude : magnitude;
    }
}

//! Decoder: out[positions[i]] = values[i] (the rest of out is zeroed beforehand).
__global__ void scatterKernel(int64_t const* positions, float const* values, size_t n, float* out)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        out[positions[i]] = values[i];
    }
}

//! out[i] = x[kept[i]] for the kept count (read on the device).
__global__ void gatherKernel(float const* x, int64_t const* kept, int64_t const* count, float* out)
{
    int64_t const n = *count;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        out[i] = x[kept[i]];
    }
}

//! flag = 1 if any value is NaN or Inf (codecs take finite values only).
__global__ void nonFiniteKernel(float const* x, size_t n, unsigned int* flag)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        if (!isfinite(x[i]))
        {
            atomicOr(flag, 1U);
        }
    }
}

struct KeptWorkspace
{
    // Laid out back to back in one caller allocation.
    static size_t bytes(size_t n, size_t cubBytes)
    {
        return align(n * sizeof(float)) + 2 * align(n) + align(n * sizeof(unsigned int))
            + align(kRADIX_BINS * sizeof(unsigned int)) + align(4 * sizeof(uint32_t)) + align(cubBytes);
    }

    static size_t align(size_t b)
    {
        return (b + 255) & ~static_cast<size_t>(255);
    }
};

size_t cubTempBytes(size_t n)
{
    size_t scanBytes = 0;
    size_t selectBytes = 0;
    cub::DeviceScan::ExclusiveSum(nullptr, scanBytes, static_cast<uint8_t const*>(nullptr),
        static_cast<unsigned int*>(nullptr), static_cast<int>(n));
    cub::DeviceSelect::Flagged(nullptr, selectBytes, thrust::counting_iterator<int64_t>(0),
        static_cast<uint8_t const*>(nullptr), static_cast<int64_t*>(nullptr), static_cast<int64_t*>(nullptr),
        static_cast<int>(n));
    return scanBytes > selectBytes ? scanBytes : selectBytes;
}

} // namespace

void launchAnyNonFinite(float const* x, uint64_t n, unsigned int* flag, cudaStream_t stream)
{
    nonFiniteKernel<<<blocksFor(n), kTHREADS, 0, stream>>>(x, n, flag);
}

void launchGather(
    float const* x, int64_t const* kept, int64_t const* count, uint64_t maxCount, float* out, cudaStream_t stream)
{
    gatherKernel<<<blocksFor(maxCount), kTHREADS, 0, stream>>>(x, kept, count, out);
}

size_t keptSelectionBytes(uint64_t n)
{
    return slicer_cuda_select_workspace_bytes(n) + KeptWorkspace::align(n * sizeof(int64_t))
        + KeptWorkspace::align(n * sizeof(float)) + 2 * KeptWorkspace::align(sizeof(int64_t));
}

slicer_status selectKeptValues(float const* x, uint64_t n, slicer_knobs const& knobs, void* workspace,
    int64_t** kept, float** values, uint64_t* keptCount, cudaStream_t stream)
{
    auto* base = static_cast<uint8_t*>(workspace);
    size_t const selectBytes = slicer_cuda_select_workspace_bytes(n);
    void* selectWorkspace = base;
    base += selectBytes;
    *kept = reinterpret_cast<int64_t*>(base);
    base += KeptWorkspace::align(n * sizeof(int64_t));
    *values = reinterpret_cast<float*>(base);
    base += KeptWorkspace::align(n * sizeof(float));
    auto* count = reinterpret_cast<int64_t*>(base);
    base += KeptWorkspace::align(sizeof(int64_t));
    auto* nonFinite = reinterpret_cast<unsigned int*>(base);

    cudaMemsetAsync(nonFinite, 0, sizeof(unsigned int), stream);
    launchAnyNonFinite(x, n, nonFinite, stream);
    uint64_t const k = slicer::keptCount(knobs.sparsity, n);
    slicer_status const status
        = slicer_cuda_select_kept(x, n, k, knobs.lam, selectWorkspace, selectBytes, *kept, count, stream);
    if (status != SLICER_OK)
    {
        return status;
    }
    launchGather(x, *kept, count, n, *values, stream);
    int64_t selected = 0;
    unsigned int bad = 0;
    cudaMemcpyAsync(&selected, count, sizeof(selected), cudaMemcpyDeviceToHost, stream);
    cudaMemcpyAsync(&bad, nonFinite, sizeof(bad), cudaMemcpyDeviceToHost, stream);
    if (cudaStreamSynchronize(stream) != cudaSuccess)
    {
        return SLICER_ERR_CUDA;
    }
    *keptCount = static_cast<uint64_t>(selected);
    return bad ? SLICER_ERR_ARGUMENT : SLICER_OK; // NaN or Inf in the input
}

} // namespace slicer

extern "C" size_t slicer_cuda_select_workspace_bytes(size_t n)
{
    return slicer::KeptWorkspace::bytes(n, slicer::cubTempBytes(n));
}

/*
 * ATKF on the GPU: writes the flat indices (ascending) of the min(k, nnz) highest
 * scores of x to `kept` and their count to `keptCount` (device memory).
 */
extern "C" slicer_status slicer_cuda_select_kept(float const* x, size_t n, uint64_t k, float lam, void* workspace,
    size_t workspaceBytes, int64_t* kept, int64_t* keptCount, cudaStream_t stream)
{
    using slicer::KeptWorkspace;
    size_t const cubBytes = slicer::cubTempBytes(n);
    if (!x || !kept || !keptCount || !workspace || n == 0 || n > 0x7fffffffU
        || workspaceBytes < KeptWorkspace::bytes(n, cubBytes))
    {
        return SLICER_ERR_ARGUMENT;
    }
    auto* base = static_cast<uint8_t*>(workspace);
    auto* scores = reinterpret_cast<float*>(base);
    base += KeptWorkspace::align(n * sizeof(float));
    auto* above = base;
    base += KeptWorkspace::align(n);
    auto* tie = base;
    base += KeptWorkspace::align(n);
    auto* tieRank = reinterpret_cast<unsigned int*>(base);
    base += KeptWorkspace::align(n * sizeof(unsigned int));
    auto* histogram = reinterpret_cast<unsigned int*>(base);
    base += KeptWorkspace::align(slicer::kRADIX_BINS * sizeof(unsigned int));
    auto* state = reinterpret_cast<uint32_t*>(base);
    base += KeptWorkspace::align(4 * sizeof(uint32_t));
    void* cubTemp = base;

    uint64_t const kk = k < n ? k : n;
    if (kk == 0)
    {
        return cudaMemsetAsync(keptCount, 0, sizeof(int64_t), stream) == cudaSuccess ? SLICER_OK : SLICER_ERR_CUDA;
    }
    int const blocks = slicer::blocksFor(n);
    slicer::atkfScoresKernel<<<blocks, slicer::kTHREADS, 0, stream>>>(x, n, 1.0f + lam, 1.0f - lam, scores);
    uint32_t const init[2] = {0U, static_cast<uint32_t>(kk)}; // prefix, rank of the k-th (1-based)
    cudaMemcpyAsync(state, init, sizeof(init), cudaMemcpyHostToDevice, stream);
    // Four passes of eight bits, most significant first: the k-th largest score.
    for (int pass = 0; pass < 4; ++pass)
    {
        int const shift = 24 - 8 * pass;
        uint32_t const prefixMask = pass == 0 ? 0U : ~0U << (shift + 8);
        cudaMemsetAsync(histogram, 0, slicer::kRADIX_BINS * sizeof(unsigned int), stream);
        // The prefix lives on the device: read it back once per pass (4 tiny copies).
        uint32_t prefix = 0;
        cudaMemcpyAsync(&prefix, state, sizeof(prefix), cudaMemcpyDeviceToHost, stream);
        cudaStreamSynchronize(stream);
        slicer::radixHistogramKernel<<<blocks, slicer::kTHREADS, 0, stream>>>(
            scores, n, prefix & prefixMask, prefixMask, shift, histogram);
        slicer::radixPickKernel<<<1, 1, 0, stream>>>(histogram, state, shift);
    }
    slicer::markKeptKernel<<<blocks, slicer::kTHREADS, 0, stream>>>(scores, n, state, above, tie);
    // state[1] is now the rank of the k-th among the scores equal to it: keep that many ties.
    size_t tempBytes = cubBytes;
    cub::DeviceScan::ExclusiveSum(cubTemp, tempBytes, tie, tieRank, static_cast<int>(n), stream);
    slicer::keepFirstTiesKernel<<<blocks, slicer::kTHREADS, 0, stream>>>(above, tie, tieRank, n, state + 1);
    tempBytes = cubBytes;
    cub::DeviceSelect::Flagged(cubTemp, tempBytes, thrust::counting_iterator<int64_t>(0), above, kept, keptCount,
        static_cast<int>(n), stream);
    return cudaGetLastError() == cudaSuccess ? SLICER_OK : SLICER_ERR_CUDA;
}

extern "C" size_t slicer_cuda_encode_workspace_bytes(size_t n)
{
    return slicer::keptSelectionBytes(n);
}

/*
 * A whole SLICER payload from a device tensor: ATKF (the O(T) part) on the GPU, then
 * the kept indices and values move to the host (caller buffers of T entries; zero
 * copy on Jetson's unified memory) for MS, ABQ, position coding and the frame
 * (slicer_encode_from_kept, byte for byte as the numpy reference).
 */
extern "C" slicer_status slicer_cuda_encode(float const* x, uint32_t const* shape, int ndim, int dtypeCode,
    slicer_knobs const* knobs, void* workspace, size_t workspaceBytes, int64_t* hostKept, float* hostValues,
    uint8_t* out, size_t capacity, size_t* written, cudaStream_t stream)
{
    using slicer::KeptWorkspace;
    if (!x || !shape || !knobs || !workspace || !hostKept || !hostValues || !written || ndim < 0 || ndim > 8)
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t n = 1;
    for (int d = 0; d < ndim; ++d)
    {
        n *= shape[d];
    }
    if (n == 0 || workspaceBytes < slicer_cuda_encode_workspace_bytes(n))
    {
        return n == 0 ? slicer_encode_from_kept(nullptr, nullptr, 0, shape, ndim, dtypeCode, knobs, out, capacity,
                                                written)
                      : SLICER_ERR_ARGUMENT;
    }
    int64_t* kept = nullptr;
    float* values = nullptr;
    uint64_t keptCount = 0;
    slicer_status const status
        = slicer::selectKeptValues(x, n, *knobs, workspace, &kept, &values, &keptCount, stream);
    if (status != SLICER_OK)
    {
        return status;
    }
    cudaMemcpyAsync(hostKept, kept, keptCount * sizeof(int64_t), cudaMemcpyDeviceToHost, stream);
    cudaMemcpyAsync(hostValues, values, keptCount * sizeof(float), cudaMemcpyDeviceToHost, stream);
    if (cudaStreamSynchronize(stream) != cudaSuccess)
    {
        return SLICER_ERR_CUDA;
    }
    return slicer_encode_from_kept(hostKept, hostValues, keptCount, shape, ndim, dtypeCode, knobs, out, capacity,
        written);
}

extern "C" slicer_status slicer_cuda_quantize(float const* magnitudes, uint32_t const* groupOf, float const* lo,
    float const* step, uint32_t const* levels, size_t n, uint32_t* codes, cudaStream_t stream)
{
    if (n == 0)
    {
        return SLICER_OK;
    }
    if (!magnitudes || !groupOf || !lo || !step || !levels || !codes)
    {
        return SLICER_ERR_ARGUMENT;
    }
    slicer::quantizeKernel<<<slicer::blocksFor(n), slicer::kTHREADS, 0, stream>>>(
        magnitudes, groupOf, lo, step, levels, n, codes);
    return cudaGetLastError() == cudaSuccess ? SLICER_OK : SLICER_ERR_CUDA;
}

extern "C" slicer_status slicer_cuda_dequantize_scatter(uint32_t const* codes, int64_t const* positions,
    uint32_t const* groupOf, float const* lo, float const* step, uint8_t const* negative, size_t n, float* out,
    cudaStream_t stream)
{
    if (n == 0)
    {
        return SLICER_OK;
    }
    if (!codes || !positions || !groupOf || !lo || !step || !negative || !out)
    {
        return SLICER_ERR_ARGUMENT;
    }
    slicer::dequantizeScatterKernel<<<slicer::blocksFor(n), slicer::kTHREADS, 0, stream>>>(
        codes, positions, groupOf, lo, step, negative, n, out);
    return cudaGetLastError() == cudaSuccess ? SLICER_OK : SLICER_ERR_CUDA;
}

extern "C" size_t slicer_cuda_decode_workspace_bytes(uint64_t maxElements)
{
    using slicer::KeptWorkspace;
    return KeptWorkspace::align(maxElements * sizeof(int64_t)) + KeptWorkspace::align(maxElements * sizeof(float));
}

/*
 * Decode a SLICER payload held on the host into a device tensor. Every check of the
 * numpy decoder runs first (SLICER_ERR_PAYLOAD for a payload it refuses); nothing is
 * written to `out` before the payload is known good. The host buffers (pinned for an
 * asynchronous copy) must stay untouched until the stream has passed this call.
 */
extern "C" slicer_status slicer_cuda_decode(uint8_t const* hostPayload, size_t len, slicer_limits const* limits,
    int64_t* hostPositions, float* hostValues, uint64_t hostCapacity, void* workspace, size_t workspaceBytes,
    float* out, uint64_t outCapacity, uint32_t* shape, int* ndim, int* dtypeCode, uint64_t* elements,
    cudaStream_t stream)
{
    using slicer::KeptWorkspace;
    if (!hostPayload || !limits || !workspace || !out || !shape || !ndim || !dtypeCode || !elements)
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t keptCount = 0;
    slicer_status const status = slicer_decode_sparse_host(hostPayload, len, limits, hostPositions, hostValues,
        hostCapacity, shape, ndim, dtypeCode, elements, &keptCount);
    if (status != SLICER_OK)
    {
        return status;
    }
    uint64_t const T = *elements;
    if (T > outCapacity || workspaceBytes < slicer_cuda_decode_workspace_bytes(keptCount))
    {
        return SLICER_ERR_CAPACITY;
    }
    auto* base = static_cast<uint8_t*>(workspace);
    auto* positions = reinterpret_cast<int64_t*>(base);
    auto* values = reinterpret_cast<float*>(base + KeptWorkspace::align(keptCount * sizeof(int64_t)));
    cudaMemsetAsync(out, 0, T * sizeof(float), stream);
    if (keptCount > 0)
    {
        cudaMemcpyAsync(positions, hostPositions, keptCount * sizeof(int64_t), cudaMemcpyHostToDevice, stream);
        cudaMemcpyAsync(values, hostValues, keptCount * sizeof(float), cudaMemcpyHostToDevice, stream);
        slicer::scatterKernel<<<slicer::blocksFor(keptCount), slicer::kTHREADS, 0, stream>>>(
            positions, values, keptCount, out);
    }
    return cudaGetLastError() == cudaSuccess ? SLICER_OK : SLICER_ERR_CUDA;
}

extern "C" int slicer_cuda_device_count(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}
