// The select step against a library baseline, timed on the device (CUDA events).
//
// The issue's target is "within 1.5x of cub::DeviceTopK-class throughput". Where the
// CCCL in use ships cub::DeviceTopK (CCCL 3.1+) that is the baseline; otherwise (CCCL
// 3.0, CUDA 13.0) it is cub::DeviceRadixSort::SortKeysDescending, a full sort, which
// a top-k should beat: the result names the baseline it used.

#include "slicer_codec.h"

#include <cub/device/device_radix_sort.cuh>
#if __has_include(<cub/device/device_topk.cuh>)
#include <cub/device/device_topk.cuh>
#define SLICER_HAVE_DEVICE_TOPK 1
#else
#define SLICER_HAVE_DEVICE_TOPK 0
#endif
#include <cuda_runtime.h>

#include <cstring>

namespace
{

struct EventTimer
{
    cudaEvent_t start{};
    cudaEvent_t stop{};
    EventTimer()
    {
        cudaEventCreate(&start);
        cudaEventCreate(&stop);
    }
    ~EventTimer()
    {
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
    }
    float elapsedMs() const
    {
        float ms = 0.0F;
        cudaEventElapsedTime(&ms, start, stop);
        return ms;
    }
};

size_t baselineTempBytes(float const* in, float* out, int n, int k)
{
    size_t bytes = 0;
#if SLICER_HAVE_DEVICE_TOPK
    cub::DeviceTopK::MaxKeys(nullptr, bytes, in, out, n, k);
#else
    (void) k;
    cub::DeviceRadixSort::SortKeysDescending(nullptr, bytes, in, out, n);
#endif
    return bytes;
}

cudaError_t runBaseline(void* temp, size_t bytes, float const* in, float* out, int n, int k, cudaStream_t stream)
{
#if SLICER_HAVE_DEVICE_TOPK
    return cub::DeviceTopK::MaxKeys(temp, bytes, in, out, n, k, stream);
#else
    (void) k;
    return cub::DeviceRadixSort::SortKeysDescending(temp, bytes, in, out, n, 0, 32, stream);
#endif
}

} // namespace

/*
 * Mean device time of `iterations` runs each: slicer_cuda_select_kept (scores, the
 * k-th by radix select, compaction) and the baseline on the same device tensor.
 * `baseline` receives "cub::DeviceTopK::MaxKeys" or "cub::DeviceRadixSort::SortKeysDescending".
 */
extern "C" slicer_status slicer_cuda_bench_select(float const* x, size_t n, uint64_t k, int iterations,
    float* selectMs, float* baselineMs, char* baseline, size_t baselineCapacity, cudaStream_t stream)
{
    if (!x || !selectMs || !baselineMs || !baseline || n == 0 || n > 0x7fffffffU || k == 0 || k > n
        || iterations < 1)
    {
        return SLICER_ERR_ARGUMENT;
    }
    char const* name
        = SLICER_HAVE_DEVICE_TOPK ? "cub::DeviceTopK::MaxKeys" : "cub::DeviceRadixSort::SortKeysDescending";
    if (std::strlen(name) + 1 > baselineCapacity)
    {
        return SLICER_ERR_CAPACITY;
    }
    std::strcpy(baseline, name);
    size_t const selectBytes = slicer_cuda_select_workspace_bytes(n);
    int const count = static_cast<int>(n);
    size_t const sortBytes = baselineTempBytes(x, nullptr, count, static_cast<int>(k));
    void* workspace = nullptr;
    int64_t* kept = nullptr;
    int64_t* keptCount = nullptr;
    float* sorted = nullptr;
    void* sortTemp = nullptr;
    slicer_status status = SLICER_ERR_CUDA;
    if (cudaMalloc(&workspace, selectBytes) == cudaSuccess && cudaMalloc(&kept, n * sizeof(int64_t)) == cudaSuccess
        && cudaMalloc(&keptCount, sizeof(int64_t)) == cudaSuccess
        && cudaMalloc(&sorted, n * sizeof(float)) == cudaSuccess && cudaMalloc(&sortTemp, sortBytes) == cudaSuccess)
    {
        EventTimer timer;
        status = slicer_cuda_select_kept(x, n, k, 0.0F, workspace, selectBytes, kept, keptCount, stream); // warm-up
        cudaEventRecord(timer.start, stream);
        for (int i = 0; i < iterations && status == SLICER_OK; ++i)
        {
            status = slicer_cuda_select_kept(x, n, k, 0.0F, workspace, selectBytes, kept, keptCount, stream);
        }
        cudaEventRecord(timer.stop, stream);
        cudaEventSynchronize(timer.stop);
        *selectMs = timer.elapsedMs() / static_cast<float>(iterations);

        bool ok = runBaseline(sortTemp, sortBytes, x, sorted, count, static_cast<int>(k), stream) == cudaSuccess;
        cudaEventRecord(timer.start, stream);
        for (int i = 0; i < iterations && ok; ++i)
        {
            ok = runBaseline(sortTemp, sortBytes, x, sorted, count, static_cast<int>(k), stream) == cudaSuccess;
        }
        cudaEventRecord(timer.stop, stream);
        cudaEventSynchronize(timer.stop);
        *baselineMs = timer.elapsedMs() / static_cast<float>(iterations);
        if (!ok && status == SLICER_OK)
        {
            status = SLICER_ERR_CUDA;
        }
    }
    cudaFree(workspace);
    cudaFree(kept);
    cudaFree(keptCount);
    cudaFree(sorted);
    cudaFree(sortTemp);
    return status;
}
