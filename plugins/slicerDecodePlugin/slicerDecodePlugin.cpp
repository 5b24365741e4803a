#include "slicerDecodePlugin.h"

#include "slicer_codec.h"

#include <sstream>
#include <utility>

using namespace nvinfer1;

namespace slicer
{
namespace plugin
{
namespace
{
constexpr char const* kPLUGIN_NAME = "SlicerDecode";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "";
constexpr size_t kMAX_RANK = 8;
} // namespace

SlicerDecodePlugin::SlicerDecodePlugin(std::string shape, std::vector<int64_t> dims)
    : mShape(std::move(shape))
    , mDims(std::move(dims))
{
}

std::vector<int64_t> SlicerDecodePlugin::parseShape(std::string const& text)
{
    std::vector<int64_t> dims;
    std::istringstream stream(text);
    std::string item;
    while (std::getline(stream, item, ','))
    {
        char* end = nullptr;
        long long const value = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || value < 1 || value > 0xFFFFFFFFLL || dims.size() == kMAX_RANK)
        {
            return {};
        }
        dims.push_back(value);
    }
    return dims;
}

uint64_t SlicerDecodePlugin::elements() const noexcept
{
    uint64_t n = 1;
    for (int64_t d : mDims)
    {
        n *= static_cast<uint64_t>(d);
    }
    return n;
}

IPluginCapability* SlicerDecodePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* SlicerDecodePlugin::clone() noexcept
{
    return new (std::nothrow) SlicerDecodePlugin(mShape, mDims);
}

char const* SlicerDecodePlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SlicerDecodePlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SlicerDecodePlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t SlicerDecodePlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t SlicerDecodePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != 2 || inputTypes[kPAYLOAD_TENSOR_IDX] != DataType::kINT32)
    {
        return -1;
    }
    outputTypes[kOUTPUT_TENSOR_IDX] = DataType::kFLOAT;
    return 0;
}

int32_t SlicerDecodePlugin::getOutputShapes(DimsExprs const* /* inputs */, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1)
    {
        return -1;
    }
    outputs[kOUTPUT_TENSOR_IDX].nbDims = static_cast<int32_t>(mDims.size());
    for (size_t d = 0; d < mDims.size(); ++d)
    {
        outputs[kOUTPUT_TENSOR_IDX].d[d] = exprBuilder.constant(mDims[d]);
    }
    return 0;
}

bool SlicerDecodePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos >= 3)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    DataType const expected = pos < nbInputs ? DataType::kINT32 : DataType::kFLOAT;
    return desc.format == TensorFormat::kLINEAR && desc.type == expected;
}

int32_t SlicerDecodePlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || in[kPAYLOAD_TENSOR_IDX].desc.dims.nbDims != 1)
    {
        logError(kPLUGIN_NAME, "expects inputs (payload: int32[W], nbytes: int32[1])");
        return -1;
    }
    return 0;
}

size_t SlicerDecodePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /* nbInputs */,
    DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    int64_t const maxWords = volume(inputs[kPAYLOAD_TENSOR_IDX].max);
    uint64_t const maxBytes = 4 * static_cast<uint64_t>(maxWords > 0 ? maxWords : 0);
    return slicer_cuda_decode_device_workspace_bytes(elements(), maxBytes);
}

int32_t SlicerDecodePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    int64_t const words = nbInputs == 2 && nbOutputs == 1 ? volume(in[kPAYLOAD_TENSOR_IDX].dims) : -1;
    if (words <= 0)
    {
        return -1;
    }
    bool const ok = mHostNbytes.reserve(sizeof(int32_t));
    if (!ok)
    {
        logError(kPLUGIN_NAME, "cannot allocate pinned host buffers");
    }
    return ok ? 0 : -1;
}

int32_t SlicerDecodePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    int64_t const words = volume(inputDesc[kPAYLOAD_TENSOR_IDX].dims);
    size_t const capacityBytes = 4 * static_cast<size_t>(words > 0 ? words : 0);
    uint64_t const n = elements();
    if (words <= 0 || mHostNbytes.bytes() < sizeof(int32_t))
    {
        logError(kPLUGIN_NAME, "payload shape changed without onShapeChange, or is empty");
        return -1;
    }
    // Only the byte count comes back; the payload is decoded where it is, on the device.
    auto* hostNbytes = mHostNbytes.as<int32_t>();
    if (cudaMemcpyAsync(hostNbytes, inputs[kNBYTES_TENSOR_IDX], sizeof(int32_t), cudaMemcpyDeviceToHost, stream)
            != cudaSuccess
        || cudaStreamSynchronize(stream) != cudaSuccess)
    {
        logError(kPLUGIN_NAME, "cannot read the byte count");
        return -1;
    }
    int32_t const nbytes = *hostNbytes;
    if (nbytes <= 0 || static_cast<size_t>(nbytes) > capacityBytes)
    {
        std::ostringstream message;
        message << "nbytes " << nbytes << " does not fit the " << capacityBytes << "-byte payload input";
        logError(kPLUGIN_NAME, message.str());
        return -1;
    }
    slicer_limits const limits{n, static_cast<uint64_t>(nbytes)};
    uint32_t shape[kMAX_RANK] = {};
    int ndim = 0;
    int dtypeCode = 0;
    uint64_t decoded = 0;
    slicer_status const status = slicer_cuda_decode_device(static_cast<uint8_t const*>(inputs[kPAYLOAD_TENSOR_IDX]),
        static_cast<size_t>(nbytes), &limits, workspace, slicer_cuda_decode_device_workspace_bytes(n, capacityBytes),
        static_cast<float*>(outputs[kOUTPUT_TENSOR_IDX]), n, shape, &ndim, &dtypeCode, &decoded, stream);
    bool sameShape = status == SLICER_OK && static_cast<size_t>(ndim) == mDims.size();
    for (size_t d = 0; sameShape && d < mDims.size(); ++d)
    {
        sameShape = static_cast<int64_t>(shape[d]) == mDims[d];
    }
    if (!sameShape)
    {
        std::ostringstream message;
        if (status == SLICER_ERR_PAYLOAD || status == SLICER_ERR_ARGUMENT)
        {
            message << "malformed payload, or not a SLICER payload (status " << status << ")";
        }
        else if (status != SLICER_OK)
        {
            message << "slicer_cuda_decode_device failed with status " << status;
        }
        else
        {
            message << "payload decodes to " << ndim << " dims / " << decoded << " elements, this node expects "
                    << mShape;
        }
        logError(kPLUGIN_NAME, message.str());
        return -1;
    }
    return 0;
}

IPluginV3* SlicerDecodePlugin::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    return clone();
}

PluginFieldCollection const* SlicerDecodePlugin::getFieldsToSerialize() noexcept
{
    mSerializedFields = {PluginField("shape", mShape.c_str(), PluginFieldType::kCHAR,
        static_cast<int32_t>(mShape.size() + 1))};
    mSerialized.nbFields = static_cast<int32_t>(mSerializedFields.size());
    mSerialized.fields = mSerializedFields.data();
    return &mSerialized;
}

SlicerDecodePluginCreator::SlicerDecodePluginCreator()
{
    mFields = {PluginField("shape", nullptr, PluginFieldType::kCHAR, 0)};
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* SlicerDecodePluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SlicerDecodePluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SlicerDecodePluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* SlicerDecodePluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* SlicerDecodePluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept
{
    auto const shape = stringField(fc, "shape");
    std::vector<int64_t> dims = shape ? SlicerDecodePlugin::parseShape(*shape) : std::vector<int64_t>{};
    if (dims.empty())
    {
        logError(kPLUGIN_NAME,
            std::string("node ") + (name ? name : "?") + ": needs a shape attribute of 1 to 8 positive dimensions, got '"
                + (shape ? *shape : std::string("(none)")) + "'");
        return nullptr;
    }
    return new (std::nothrow) SlicerDecodePlugin(*shape, std::move(dims));
}

} // namespace plugin
} // namespace slicer
