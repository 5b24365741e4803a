// The GPU executor of parallel_encode.h: maps as grid-stride kernels over the
// shared per-element code, scans / sorts / reductions by CUB, all on one stream,
// every buffer carved from the caller's workspace. Host-visible results (a few
// counts and the per-block table) come back with a synchronising copy.
#ifndef SLICER_EXEC_CUDA_CUH
#define SLICER_EXEC_CUDA_CUH

#include "parallel_encode.h"

#include <cub/cub.cuh>
#include <cuda_runtime.h>

namespace slicer
{
namespace par
{

constexpr int kEXEC_THREADS = 256;

template <typename F>
__global__ void forEachKernel(uint64_t n, F f)
{
    for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<uint64_t>(gridDim.x) * blockDim.x)
    {
        f(i);
    }
}

//! One CTA per segment: the sum of f(segment, r) for r in [begin, end).
template <typename F>
__global__ void segmentedSumKernel(uint64_t const* begin, uint64_t const* end, unsigned long long* out, F f)
{
    using Reduce = cub::BlockReduce<unsigned long long, kEXEC_THREADS>;
    __shared__ typename Reduce::TempStorage temp;
    uint32_t const segment = blockIdx.x;
    unsigned long long acc = 0;
    for (uint64_t r = begin[segment] + threadIdx.x; r < end[segment]; r += blockDim.x)
    {
        acc += f(segment, r);
    }
    unsigned long long const total = Reduce(temp).Sum(acc);
    if (threadIdx.x == 0)
    {
        out[segment] = total;
    }
}

//! K grid-wide sums in one pass: per-thread accumulators, a block reduction each, one atomic add each.
template <int K, typename F>
__global__ void sumsKernel(uint64_t n, unsigned long long* out, F f)
{
    using Reduce = cub::BlockReduce<unsigned long long, kEXEC_THREADS>;
    __shared__ typename Reduce::TempStorage temp;
    uint64_t acc[K] = {};
    for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<uint64_t>(gridDim.x) * blockDim.x)
    {
        f(i, acc);
    }
    for (int j = 0; j < K; ++j)
    {
        unsigned long long const total = Reduce(temp).Sum(static_cast<unsigned long long>(acc[j]));
        if (threadIdx.x == 0)
        {
            atomicAdd(&out[j], total);
        }
        __syncthreads(); // the temp storage is reused by the next reduction
    }
}

class CudaExec
{
public:
    CudaExec(void* workspace, size_t bytes, cudaStream_t stream)
        : mArena(workspace, bytes)
        , mStream(stream)
    {
    }

    Arena& arena()
    {
        return mArena;
    }

    template <typename F>
    void forEach(uint64_t n, F f)
    {
        if (n == 0)
        {
            return;
        }
        uint64_t const blocks = (n + kEXEC_THREADS - 1) / kEXEC_THREADS;
        unsigned const grid = static_cast<unsigned>(blocks < 65535ULL * 32 ? blocks : 65535ULL * 32);
        forEachKernel<<<grid, kEXEC_THREADS, 0, mStream>>>(n, f);
        check(cudaGetLastError());
    }

    void exclusiveScanU32(uint32_t const* in, uint32_t* out, uint64_t n)
    {
        runCub(n, [&](void* temp, size_t& bytes) {
            return cub::DeviceScan::ExclusiveSum(temp, bytes, in, out, static_cast<int>(n), mStream);
        });
    }

    void exclusiveScanU64(uint64_t const* in, uint64_t* out, uint64_t n)
    {
        runCub(n, [&](void* temp, size_t& bytes) {
            return cub::DeviceScan::ExclusiveSum(temp, bytes, in, out, static_cast<int>(n), mStream);
        });
    }

    //! Stable (CUB's radix sort keeps equal keys in order).
    void sortDescending(float const* keysIn, float* keysOut, uint32_t const* valsIn, uint32_t* valsOut, uint64_t n)
    {
        runCub(n, [&](void* temp, size_t& bytes) {
            return cub::DeviceRadixSort::SortPairsDescending(
                temp, bytes, keysIn, keysOut, valsIn, valsOut, static_cast<int>(n), 0, 32, mStream);
        });
    }

    void sortByByte(uint8_t const* keysIn, uint8_t* keysOut, uint32_t const* valsIn, uint32_t* valsOut, uint64_t n,
        int endBit)
    {
        runCub(n, [&](void* temp, size_t& bytes) {
            return cub::DeviceRadixSort::SortPairs(
                temp, bytes, keysIn, keysOut, valsIn, valsOut, static_cast<int>(n), 0, endBit, mStream);
        });
    }

    template <typename F>
    uint64_t sum(uint64_t n, F f)
    {
        if (n == 0)
        {
            return 0;
        }
        Arena::Scope temporaries(mArena);
        unsigned long long* terms = mArena.take<unsigned long long>(n);
        unsigned long long* total = mArena.take<unsigned long long>(1);
        if (mArena.failed())
        {
            return 0;
        }
        forEach(n, [=] __device__(uint64_t i) { terms[i] = f(i); });
        runCub(n, [&](void* temp, size_t& bytes) {
            return cub::DeviceReduce::Sum(temp, bytes, terms, total, static_cast<int>(n), mStream);
        });
        unsigned long long result = 0;
        toHost(&result, total, sizeof(result));
        return result;
    }

    template <int K, typename F>
    void sums(uint64_t n, uint64_t* hostOut, F f)
    {
        Arena::Scope temporaries(mArena);
        unsigned long long* dOut = mArena.take<unsigned long long>(K);
        if (mArena.failed())
        {
            return;
        }
        zero(dOut, K * sizeof(unsigned long long));
        if (n > 0)
        {
            uint64_t const blocks = (n + kEXEC_THREADS - 1) / kEXEC_THREADS;
            unsigned const grid = static_cast<unsigned>(blocks < 1024 ? blocks : 1024);
            sumsKernel<K><<<grid, kEXEC_THREADS, 0, mStream>>>(n, dOut, f);
            check(cudaGetLastError());
        }
        toHost(hostOut, dOut, K * sizeof(unsigned long long));
    }

    template <typename F>
    void segmentedSum(uint32_t segments, uint64_t const* begin, uint64_t const* end, uint64_t* out, F f)
    {
        if (segments == 0)
        {
            return;
        }
        Arena::Scope temporaries(mArena);
        uint64_t* dBegin = mArena.take<uint64_t>(segments);
        uint64_t* dEnd = mArena.take<uint64_t>(segments);
        unsigned long long* dOut = mArena.take<unsigned long long>(segments);
        if (mArena.failed())
        {
            return;
        }
        toDevice(dBegin, begin, segments * sizeof(uint64_t));
        toDevice(dEnd, end, segments * sizeof(uint64_t));
        segmentedSumKernel<<<segments, kEXEC_THREADS, 0, mStream>>>(dBegin, dEnd, dOut, f);
        check(cudaGetLastError());
        toHost(out, dOut, segments * sizeof(uint64_t));
    }

    void toHost(void* dst, void const* src, size_t bytes)
    {
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, mStream));
        check(cudaStreamSynchronize(mStream));
    }

    //! From pageable host memory: the call returns once the bytes are staged, so the
    //! caller may reuse its buffer at once.
    void toDevice(void* dst, void const* src, size_t bytes)
    {
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, mStream));
    }

    void zero(void* p, size_t bytes)
    {
        check(cudaMemsetAsync(p, 0, bytes, mStream));
    }

    bool ok() const
    {
        return mStatus == cudaSuccess && !mArena.failed();
    }

    //! CUB temporary storage for n items, the most any call above asks for.
    static size_t cubTempBytes(uint64_t n)
    {
        int const count = static_cast<int>(n);
        size_t most = 0;
        size_t bytes = 0;
        cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<uint64_t const*>(nullptr),
            static_cast<uint64_t*>(nullptr), count);
        most = bytes > most ? bytes : most;
        cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<uint32_t const*>(nullptr),
            static_cast<uint32_t*>(nullptr), count);
        most = bytes > most ? bytes : most;
        cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, static_cast<float const*>(nullptr),
            static_cast<float*>(nullptr), static_cast<uint32_t const*>(nullptr), static_cast<uint32_t*>(nullptr),
            count);
        most = bytes > most ? bytes : most;
        cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<uint8_t const*>(nullptr),
            static_cast<uint8_t*>(nullptr), static_cast<uint32_t const*>(nullptr), static_cast<uint32_t*>(nullptr),
            count);
        most = bytes > most ? bytes : most;
        cub::DeviceReduce::Sum(nullptr, bytes, static_cast<unsigned long long const*>(nullptr),
            static_cast<unsigned long long*>(nullptr), count);
        return (bytes > most ? bytes : most) + 256;
    }

private:
    template <typename Call>
    void runCub(uint64_t n, Call const& call)
    {
        if (n == 0)
        {
            return;
        }
        size_t bytes = 0;
        check(call(nullptr, bytes));
        Arena::Scope temporaries(mArena);
        void* temp = mArena.take<uint8_t>(bytes);
        if (!temp)
        {
            return;
        }
        check(call(temp, bytes));
    }

    void check(cudaError_t status)
    {
        if (status != cudaSuccess && mStatus == cudaSuccess)
        {
            mStatus = status;
        }
    }

    Arena mArena;
    cudaStream_t mStream;
    cudaError_t mStatus{cudaSuccess};
};

} // namespace par
} // namespace slicer

#endif // SLICER_EXEC_CUDA_CUH
