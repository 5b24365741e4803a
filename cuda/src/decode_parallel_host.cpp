// The data-parallel SLICER decoder (parallel_decode.h) run by the host executor:
// the CPU check of the stages the GPU decoder runs, held to the numpy decoder's
// values and refusals.

#include "exec_host.h"
#include "parallel_decode.h"
#include "slicer_codec.h"

extern "C" size_t slicer_decode_parallel_workspace_bytes(uint64_t maxElements, uint64_t maxPayloadBytes)
{
    return slicer::par::decodeWorkspaceBound(maxElements, maxPayloadBytes);
}

extern "C" slicer_status slicer_decode_parallel_host(uint8_t const* payload, size_t len, slicer_limits const* limits,
    void* workspace, size_t workspaceBytes, float* out, uint64_t capacity, uint32_t* shape, int* ndim, int* dtypeCode,
    uint64_t* elements)
{
    if (!payload || !limits || !workspace || !shape || !ndim || !dtypeCode || !elements)
    {
        return SLICER_ERR_ARGUMENT;
    }
    slicer::par::HostExec exec(workspace, workspaceBytes);
    return slicer::par::decodePayload(exec, payload, len, *limits, out, capacity, shape, ndim, dtypeCode, elements);
}
