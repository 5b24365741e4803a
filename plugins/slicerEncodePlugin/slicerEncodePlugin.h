/*
 * SlicerEncode (ONNX domain ai.slicer): a float32 feature to a SLICER payload.
 *
 *   inputs   0  x        float32, any static-rank shape (the cut's activation)
 *            1  knobs    float32[7]: s, λ, M+, M-, Q̄, q_min, δ (the runtime selector's choice)
 *   outputs  0  payload  int32[ceil(payload_bytes / 4)]: the wire message in its first
 *                        nbytes bytes, zeros after (TensorRT plugins cannot output uint8)
 *            1  nbytes   int32[1]
 *
 * Attributes (creation fields): payload_bytes, min_sparsity, max_blocks, max_q_bits,
 * the loosest knobs the node was sized for. enqueue validates and calls
 * slicer_cuda_encode_device (cuda/), whose bytes equal the numpy reference's.
 */
#ifndef SLICER_ENCODE_PLUGIN_H
#define SLICER_ENCODE_PLUGIN_H

#include "../common/slicerPluginUtils.h"
#include "slicer_codec.h"

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace slicer
{
namespace plugin
{

class SlicerEncodePlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime
{
public:
    static constexpr int32_t kX_TENSOR_IDX = 0;
    static constexpr int32_t kKNOBS_TENSOR_IDX = 1;
    static constexpr int32_t kPAYLOAD_TENSOR_IDX = 0;
    static constexpr int32_t kNBYTES_TENSOR_IDX = 1;
    static constexpr int32_t kNB_KNOBS = 7;

    struct Attributes
    {
        int64_t payloadBytes;
        float minSparsity;
        int32_t maxBlocks;
        int32_t maxQBits;
    };

    explicit SlicerEncodePlugin(Attributes const& attributes);
    ~SlicerEncodePlugin() override = default;

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

private:
    //! The knobs as the codec takes them, or an error message if they are out of range
    //! or looser than the node was sized for.
    std::string checkKnobs(float const* values, slicer_knobs* knobs) const;

    Attributes mAttributes;
    // The knobs read back and the byte count sent out (pinned: copies on the stream).
    PinnedBuffer mHostScalars;
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerialized{};
};

class SlicerEncodePluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SlicerEncodePluginCreator();

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

#endif // SLICER_ENCODE_PLUGIN_H
