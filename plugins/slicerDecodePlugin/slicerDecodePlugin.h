/*
 * SlicerDecode (ONNX domain ai.slicer): a SLICER payload back to the float32 feature.
 *
 *   inputs   0  payload  int32[W]: the wire message in its first nbytes bytes (the
 *                        encoder's output as it arrives, any W)
 *            1  nbytes   int32[1]
 *   outputs  0  x̂        float32 of the `shape` attribute
 *
 * Attribute (creation field): shape, comma-separated dimensions ("1,64,28,28").
 * enqueue validates and calls slicer_cuda_decode_device (cuda/): every check of the
 * numpy decoder runs on the device before the output is touched.
 */
#ifndef SLICER_DECODE_PLUGIN_H
#define SLICER_DECODE_PLUGIN_H

#include "../common/slicerPluginUtils.h"

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace slicer
{
namespace plugin
{

class SlicerDecodePlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime
{
public:
    static constexpr int32_t kPAYLOAD_TENSOR_IDX = 0;
    static constexpr int32_t kNBYTES_TENSOR_IDX = 1;
    static constexpr int32_t kOUTPUT_TENSOR_IDX = 0;

    //! `shape` as the node's attribute spells it; `dims` parsed from it.
    SlicerDecodePlugin(std::string shape, std::vector<int64_t> dims);
    ~SlicerDecodePlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    //! "1,64,28,28" → {1, 64, 28, 28}; empty if malformed (a dimension < 1, more than 8).
    static std::vector<int64_t> parseShape(std::string const& text);

private:
    uint64_t elements() const noexcept;

    std::string mShape;
    std::vector<int64_t> mDims;
    // The byte count read back (pinned: the copy runs on the stream).
    PinnedBuffer mHostNbytes;
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerialized{};
};

class SlicerDecodePluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SlicerDecodePluginCreator();

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace slicer

#endif // SLICER_DECODE_PLUGIN_H
