// The SLICER codec wholly on the device. Encode: ATKF (kernels.cu's select), then
// the data-parallel stages of parallel_encode.h on the GPU executor, the payload
// written to device memory (an engine output stays on the device). Decode: the
// stages of parallel_decode.h, from a payload in device memory. The same stages run
// on the host executor in the CPU tests: numpy's bytes, values and refusals.

#include "exec_cuda.cuh"
#include "launchers.h"
#include "parallel_decode.h"
#include "slicer_codec.h"

#include <cuda_runtime.h>

#include <cmath>

extern "C" size_t slicer_cuda_encode_device_workspace_bytes(size_t n)
{
    return slicer::keptSelectionBytes(n) + slicer::par::workspaceBound(n) + slicer::par::CudaExec::cubTempBytes(n);
}

/*
 * Encode T = prod(shape) float32 values on the device into `out` (device memory,
 * `capacity` bytes), byte for byte as the numpy reference. Synchronises the stream
 * a few times (counts and the per-block table come back to the host). `written`
 * (host) receives the payload size, also when the capacity is too small.
 */
extern "C" slicer_status slicer_cuda_encode_device(float const* x, uint32_t const* shape, int ndim, int dtypeCode,
    slicer_knobs const* knobs, void* workspace, size_t workspaceBytes, uint8_t* out, size_t capacity, size_t* written,
    cudaStream_t stream)
{
    if (!x || !shape || !knobs || !workspace || !written || ndim < 0 || ndim > 8 || (dtypeCode != 1 && dtypeCode != 2)
        || !slicer::par::knobsValid(*knobs))
    {
        return SLICER_ERR_ARGUMENT;
    }
    uint64_t n = 1;
    for (int d = 0; d < ndim; ++d)
    {
        n *= shape[d];
    }
    if (n == 0 || n > 0x7fffffffU || workspaceBytes < slicer_cuda_encode_device_workspace_bytes(n))
    {
        return SLICER_ERR_ARGUMENT;
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
    size_t const used = slicer::keptSelectionBytes(n);
    slicer::par::CudaExec exec(static_cast<uint8_t*>(workspace) + used, workspaceBytes - used, stream);
    return slicer::par::encodeFromKept(
        exec, kept, values, keptCount, shape, ndim, dtypeCode, *knobs, out, capacity, written);
}

extern "C" size_t slicer_cuda_decode_device_workspace_bytes(uint64_t maxElements, uint64_t maxPayloadBytes)
{
    return slicer::par::decodeWorkspaceBound(maxElements, maxPayloadBytes)
        + slicer::par::CudaExec::cubTempBytes(maxElements > maxPayloadBytes * 8 ? maxElements : maxPayloadBytes * 8);
}

/*
 * Decode a SLICER payload held in device memory into `out` (device, `capacity`
 * floats). Every check of the numpy decoder runs first (SLICER_ERR_PAYLOAD for a
 * payload it refuses); `out` is written only after all have passed. Shape, dtype and
 * element count go to host memory. Synchronises the stream a few times.
 */
extern "C" slicer_status slicer_cuda_decode_device(uint8_t const* payload, size_t len, slicer_limits const* limits,
    void* workspace, size_t workspaceBytes, float* out, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements, cudaStream_t stream)
{
    if (!payload || !limits || !workspace || !shape || !ndim || !dtypeCode || !elements)
    {
        return SLICER_ERR_ARGUMENT;
    }
    slicer::par::CudaExec exec(workspace, workspaceBytes, stream);
    return slicer::par::decodePayload(exec, payload, len, *limits, out, capacity, shape, ndim, dtypeCode, elements);
}
