// The data-parallel SLICER encoder (parallel_encode.h) run by the host executor:
// the CPU check of the stages the GPU runs, byte for byte with the numpy reference.

#include "exec_host.h"
#include "slicer_codec.h"

extern "C" size_t slicer_encode_parallel_workspace_bytes(uint64_t maxElements)
{
    return slicer::par::workspaceBound(maxElements);
}

extern "C" slicer_status slicer_encode_from_kept_parallel(int64_t const* kept, float const* values,
    uint64_t keptCount, uint32_t const* shape, int ndim, int dtypeCode, slicer_knobs const* knobs, void* workspace,
    size_t workspaceBytes, uint8_t* out, size_t capacity, size_t* written)
{
    if (!shape || !knobs || !written || !workspace || ndim < 0 || ndim > 8 || (dtypeCode != 1 && dtypeCode != 2)
        || (keptCount > 0 && (!kept || !values)) || !slicer::par::knobsValid(*knobs))
    {
        return SLICER_ERR_ARGUMENT;
    }
    slicer::par::HostExec exec(workspace, workspaceBytes);
    return slicer::par::encodeFromKept(
        exec, kept, values, keptCount, shape, ndim, dtypeCode, *knobs, out, capacity, written);
}
