#include "slicerEncodePlugin.h"

#include "slicer_codec.h"

#include <cmath>
#include <sstream>

using namespace nvinfer1;

namespace slicer
{
namespace plugin
{
namespace
{
constexpr char const* kPLUGIN_NAME = "SlicerEncode";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "";
constexpr int32_t kMAX_RANK = 8;
constexpr size_t kSCALAR_BYTES = 64; // 7 knobs, then the byte count at offset 32

int32_t payloadWords(int64_t payloadBytes)
{
    return static_cast<int32_t>((payloadBytes + 3) / 4);
}
} // namespace

SlicerEncodePlugin::SlicerEncodePlugin(Attributes const& attributes)
    : mAttributes(attributes)
{
}

IPluginCapability* SlicerEncodePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* SlicerEncodePlugin::clone() noexcept
{
    // Host buffers are per instance (one per execution context): a clone starts empty.
    return new (std::nothrow) SlicerEncodePlugin(mAttributes);
}

char const* SlicerEncodePlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SlicerEncodePlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SlicerEncodePlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t SlicerEncodePlugin::getNbOutputs() const noexcept
{
    return 2;
}

int32_t SlicerEncodePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 2 || nbInputs != 2 || inputTypes[kX_TENSOR_IDX] != DataType::kFLOAT)
    {
        return -1;
    }
    // The payload travels as int32 words: plugin outputs cannot be uint8.
    outputTypes[kPAYLOAD_TENSOR_IDX] = DataType::kINT32;
    outputTypes[kNBYTES_TENSOR_IDX] = DataType::kINT32;
    return 0;
}

int32_t SlicerEncodePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 2 || nbOutputs != 2 || inputs[kX_TENSOR_IDX].nbDims > kMAX_RANK)
    {
        return -1;
    }
    // Static: the payload bound of the loosest knobs, whatever the knobs are at run time.
    outputs[kPAYLOAD_TENSOR_IDX].nbDims = 1;
    outputs[kPAYLOAD_TENSOR_IDX].d[0] = exprBuilder.constant(payloadWords(mAttributes.payloadBytes));
    outputs[kNBYTES_TENSOR_IDX].nbDims = 1;
    outputs[kNBYTES_TENSOR_IDX].d[0] = exprBuilder.constant(1);
    return 0;
}

bool SlicerEncodePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 2 || pos < 0 || pos >= 4)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    DataType const expected = pos < nbInputs ? DataType::kFLOAT : DataType::kINT32;
    return desc.format == TensorFormat::kLINEAR && desc.type == expected;
}

int32_t SlicerEncodePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /* out */,
    int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 2 || in[kKNOBS_TENSOR_IDX].desc.dims.nbDims != 1
        || in[kKNOBS_TENSOR_IDX].desc.dims.d[0] != kNB_KNOBS)
    {
        logError(kPLUGIN_NAME, "expects inputs (x, knobs: float32[7])");
        return -1;
    }
    return 0;
}

size_t SlicerEncodePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /* nbInputs */,
    DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    int64_t const maxElements = volume(inputs[kX_TENSOR_IDX].max);
    return maxElements > 0 ? slicer_cuda_encode_device_workspace_bytes(static_cast<size_t>(maxElements)) : 0;
}

int32_t SlicerEncodePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    int64_t const elements = nbInputs == 2 && nbOutputs == 2 ? volume(in[kX_TENSOR_IDX].dims) : -1;
    if (elements <= 0)
    {
        return -1;
    }
    bool const ok = mHostScalars.reserve(kSCALAR_BYTES);
    if (!ok)
    {
        logError(kPLUGIN_NAME, "cannot allocate pinned host buffers");
    }
    return ok ? 0 : -1;
}

std::string SlicerEncodePlugin::checkKnobs(float const* k, slicer_knobs* knobs) const
{
    // The one knob order (slicer_compile/codec/config.py SLICER_KNOB_ORDER: s, λ, δ, M+, M-, Q̄, q_min)
    // and the one range check of the C ABI (slicer_knobs_from_values).
    std::ostringstream why;
    if (slicer_knobs_from_values(k, knobs) != SLICER_OK)
    {
        why << "knobs out of range: s=" << k[0] << " lambda=" << k[1] << " delta=" << k[2] << " blocks=(" << k[3]
            << "," << k[4] << ") q_bits=" << k[5] << " q_min=" << k[6];
    }
    else if (knobs->sparsity < mAttributes.minSparsity || knobs->blocksPos > mAttributes.maxBlocks
        || knobs->blocksNeg > mAttributes.maxBlocks || knobs->qBits > mAttributes.maxQBits)
    {
        why << "knobs are looser than this node was sized for (sparsity >= " << mAttributes.minSparsity
            << ", blocks <= " << mAttributes.maxBlocks << ", q_bits <= " << mAttributes.maxQBits << ")";
    }
    return why.str();
}

int32_t SlicerEncodePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& dims = inputDesc[kX_TENSOR_IDX].dims;
    int64_t const elements = volume(dims);
    if (elements <= 0 || dims.nbDims > kMAX_RANK || mHostScalars.bytes() < kSCALAR_BYTES)
    {
        logError(kPLUGIN_NAME, "input shape changed without onShapeChange, or is empty");
        return -1;
    }
    // The knobs live on the device (an engine input): two dozen bytes back to the host.
    auto* hostKnobs = mHostScalars.as<float>();
    if (cudaMemcpyAsync(hostKnobs, inputs[kKNOBS_TENSOR_IDX], kNB_KNOBS * sizeof(float), cudaMemcpyDeviceToHost,
            stream)
            != cudaSuccess
        || cudaStreamSynchronize(stream) != cudaSuccess)
    {
        logError(kPLUGIN_NAME, "cannot read the knobs");
        return -1;
    }
    slicer_knobs knobs{};
    std::string const why = checkKnobs(hostKnobs, &knobs);
    if (!why.empty())
    {
        logError(kPLUGIN_NAME, why);
        return -1;
    }
    uint32_t shape[kMAX_RANK] = {};
    for (int32_t d = 0; d < dims.nbDims; ++d)
    {
        shape[d] = static_cast<uint32_t>(dims.d[d]);
    }
    // Every stage on the device: the payload is written straight into the output.
    auto* payload = static_cast<uint8_t*>(outputs[kPAYLOAD_TENSOR_IDX]);
    size_t written = 0;
    size_t const capacity = static_cast<size_t>(mAttributes.payloadBytes);
    slicer_status const status = slicer_cuda_encode_device(static_cast<float const*>(inputs[kX_TENSOR_IDX]), shape,
        dims.nbDims, /* dtypeCode float32 */ 1, &knobs, workspace,
        slicer_cuda_encode_device_workspace_bytes(static_cast<size_t>(elements)), payload, capacity, &written, stream);
    if (status != SLICER_OK)
    {
        std::ostringstream message;
        if (status == SLICER_ERR_CAPACITY)
        {
            message << "payload of " << written << " bytes exceeds the node's " << capacity;
        }
        else
        {
            message << "slicer_cuda_encode_device failed with status " << status
                    << (status == SLICER_ERR_ARGUMENT ? " (NaN or Inf in the input?)" : "");
        }
        logError(kPLUGIN_NAME, message.str());
        return -1;
    }
    auto* hostNbytes = reinterpret_cast<int32_t*>(mHostScalars.as<uint8_t>() + 32);
    *hostNbytes = static_cast<int32_t>(written);
    size_t const paddedBytes = 4 * static_cast<size_t>(payloadWords(mAttributes.payloadBytes));
    bool const copied = cudaMemsetAsync(payload + written, 0, paddedBytes - written, stream) == cudaSuccess
        && cudaMemcpyAsync(outputs[kNBYTES_TENSOR_IDX], hostNbytes, sizeof(int32_t), cudaMemcpyHostToDevice, stream)
            == cudaSuccess;
    return copied ? 0 : -1;
}

IPluginV3* SlicerEncodePlugin::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    return clone();
}

PluginFieldCollection const* SlicerEncodePlugin::getFieldsToSerialize() noexcept
{
    mSerializedFields = {
        PluginField("payload_bytes", &mAttributes.payloadBytes, PluginFieldType::kINT64, 1),
        PluginField("min_sparsity", &mAttributes.minSparsity, PluginFieldType::kFLOAT32, 1),
        PluginField("max_blocks", &mAttributes.maxBlocks, PluginFieldType::kINT32, 1),
        PluginField("max_q_bits", &mAttributes.maxQBits, PluginFieldType::kINT32, 1),
    };
    mSerialized.nbFields = static_cast<int32_t>(mSerializedFields.size());
    mSerialized.fields = mSerializedFields.data();
    return &mSerialized;
}

SlicerEncodePluginCreator::SlicerEncodePluginCreator()
{
    mFields = {
        PluginField("payload_bytes", nullptr, PluginFieldType::kINT64, 1),
        PluginField("min_sparsity", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("max_blocks", nullptr, PluginFieldType::kINT32, 1),
        PluginField("max_q_bits", nullptr, PluginFieldType::kINT32, 1),
    };
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* SlicerEncodePluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SlicerEncodePluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SlicerEncodePluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* SlicerEncodePluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* SlicerEncodePluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept
{
    auto const payloadBytes = intField(fc, "payload_bytes");
    auto const minSparsity = floatField(fc, "min_sparsity");
    auto const maxBlocks = intField(fc, "max_blocks");
    auto const maxQBits = intField(fc, "max_q_bits");
    if (!payloadBytes || !minSparsity || !maxBlocks || !maxQBits || *payloadBytes <= 0
        || *payloadBytes > (int64_t{1} << 31) - 4 || *maxBlocks < 1 || *maxBlocks > 64 || *maxQBits < 1
        || *maxQBits > 16 || !(*minSparsity >= 0.0F && *minSparsity < 1.0F))
    {
        logError(kPLUGIN_NAME,
            std::string("node ") + (name ? name : "?")
                + ": needs payload_bytes (1..2^31), min_sparsity [0,1), max_blocks (1..64), max_q_bits (1..16)");
        return nullptr;
    }
    SlicerEncodePlugin::Attributes const attributes{
        *payloadBytes, *minSparsity, static_cast<int32_t>(*maxBlocks), static_cast<int32_t>(*maxQBits)};
    return new (std::nothrow) SlicerEncodePlugin(attributes);
}

} // namespace plugin
} // namespace slicer
