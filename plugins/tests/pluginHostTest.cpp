/*
 * The plugins' host-side logic, without a GPU or the TensorRT runtime (only its
 * headers): the creators registered by getCreators, creation from the fields the
 * ONNX parser hands over (and refusal of bad ones), the serialize/deserialize round
 * trip, output types, format support and the decoder's shape attribute.
 * Built and run by tests/backends/test_tensorrt_plugins.py where headers exist.
 */
#include "../slicerDecodePlugin/slicerDecodePlugin.h"
#include "../slicerEncodePlugin/slicerEncodePlugin.h"

#include <cstdio>
#include <cstring>
#include <string>

using namespace nvinfer1;
using slicer::plugin::SlicerDecodePlugin;
using slicer::plugin::SlicerEncodePlugin;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{
int gFailures = 0;

void check(bool condition, char const* what)
{
    if (!condition)
    {
        std::printf("FAIL: %s\n", what);
        ++gFailures;
    }
}

IPluginCreatorV3One* creator(char const* name)
{
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; i < count; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0)
        {
            return c;
        }
    }
    return nullptr;
}

DynamicPluginTensorDesc desc(DataType type)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    return d;
}
} // namespace

int main()
{
    int32_t count = 0;
    getCreators(count);
    check(count == 2, "two creators registered");
    IPluginCreatorV3One* encodeCreator = creator("SlicerEncode");
    IPluginCreatorV3One* decodeCreator = creator("SlicerDecode");
    check(encodeCreator && decodeCreator, "SlicerEncode and SlicerDecode found by name");
    if (!encodeCreator || !decodeCreator)
    {
        return 1;
    }
    check(std::strcmp(encodeCreator->getPluginVersion(), "1") == 0, "plugin version 1 (the parser's default)");
    check(encodeCreator->getFieldNames()->nbFields == 4, "encoder declares four fields");

    // The ONNX parser hands ints over as INT32 (or INT64) and floats as FLOAT32.
    int32_t payloadBytes = 1001;
    float minSparsity = 0.5F;
    int32_t maxBlocks = 8;
    int32_t maxQBits = 8;
    PluginField fields[] = {PluginField("payload_bytes", &payloadBytes, PluginFieldType::kINT32, 1),
        PluginField("min_sparsity", &minSparsity, PluginFieldType::kFLOAT32, 1),
        PluginField("max_blocks", &maxBlocks, PluginFieldType::kINT32, 1),
        PluginField("max_q_bits", &maxQBits, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fc{4, fields};
    auto* encoder = static_cast<SlicerEncodePlugin*>(encodeCreator->createPlugin("x.encode", &fc, TensorRTPhase::kBUILD));
    check(encoder != nullptr, "encoder created from parser fields");

    PluginFieldCollection missing{3, fields};
    check(encodeCreator->createPlugin("x.encode", &missing, TensorRTPhase::kBUILD) == nullptr,
        "encoder without max_q_bits refused");
    int32_t tooManyBlocks = 65;
    PluginField badFields[] = {fields[0], fields[1], PluginField("max_blocks", &tooManyBlocks, PluginFieldType::kINT32, 1),
        fields[3]};
    PluginFieldCollection bad{4, badFields};
    check(encodeCreator->createPlugin("x.encode", &bad, TensorRTPhase::kBUILD) == nullptr, "max_blocks 65 refused");

    if (encoder)
    {
        check(encoder->getNbOutputs() == 2, "encoder has two outputs");
        DataType in[] = {DataType::kFLOAT, DataType::kFLOAT};
        DataType out[2] = {};
        check(encoder->getOutputDataTypes(out, 2, in, 2) == 0 && out[0] == DataType::kINT32
                && out[1] == DataType::kINT32,
            "payload and nbytes are int32 (plugins cannot output uint8)");
        DataType half[] = {DataType::kHALF, DataType::kFLOAT};
        check(encoder->getOutputDataTypes(out, 2, half, 2) != 0, "a half input is refused");
        DynamicPluginTensorDesc io[] = {desc(DataType::kFLOAT), desc(DataType::kFLOAT), desc(DataType::kINT32),
            desc(DataType::kINT32)};
        check(encoder->supportsFormatCombination(0, io, 2, 2) && encoder->supportsFormatCombination(3, io, 2, 2),
            "linear float inputs, int32 outputs supported");
        io[2].desc.type = DataType::kINT8;
        check(!encoder->supportsFormatCombination(2, io, 2, 2), "an int8 payload is not");

        // Serialize, then create at runtime from the serialized fields: the same node.
        PluginFieldCollection const* serialized = encoder->getFieldsToSerialize();
        auto* again = static_cast<SlicerEncodePlugin*>(
            encodeCreator->createPlugin("x.encode", serialized, TensorRTPhase::kRUNTIME));
        check(again != nullptr, "encoder recreated from its serialized fields");
        if (again)
        {
            PluginFieldCollection const* twice = again->getFieldsToSerialize();
            check(twice->nbFields == 4
                    && *static_cast<int64_t const*>(twice->fields[0].data) == 1001
                    && *static_cast<float const*>(twice->fields[1].data) == 0.5F
                    && *static_cast<int32_t const*>(twice->fields[2].data) == 8,
                "serialized fields survive the round trip");
            delete again;
        }
        IPluginV3* copy = encoder->clone();
        check(copy != nullptr && std::strcmp(static_cast<SlicerEncodePlugin*>(copy)->getPluginName(), "SlicerEncode") == 0,
            "clone");
        delete copy;
        delete encoder;
    }

    // Decoder: the shape attribute arrives as a string.
    check(SlicerDecodePlugin::parseShape("1,64,28,28").size() == 4, "shape 1,64,28,28 parsed");
    check(SlicerDecodePlugin::parseShape("1,0,3").empty(), "a zero dimension refused");
    check(SlicerDecodePlugin::parseShape("1,x").empty(), "a non-number refused");
    check(SlicerDecodePlugin::parseShape("1,2,3,4,5,6,7,8,9").empty(), "nine dimensions refused");
    check(SlicerDecodePlugin::parseShape("").empty(), "an empty shape refused");
    std::string shape = "1,16,7,7";
    PluginField shapeField("shape", shape.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(shape.size()));
    PluginFieldCollection decodeFc{1, &shapeField};
    auto* decoder
        = static_cast<SlicerDecodePlugin*>(decodeCreator->createPlugin("x.decode", &decodeFc, TensorRTPhase::kBUILD));
    check(decoder != nullptr, "decoder created from a shape string without a NUL");
    std::string badShape = "1,-16";
    PluginField badShapeField("shape", badShape.c_str(), PluginFieldType::kCHAR, 6);
    PluginFieldCollection badDecodeFc{1, &badShapeField};
    check(decodeCreator->createPlugin("x.decode", &badDecodeFc, TensorRTPhase::kBUILD) == nullptr,
        "a negative dimension refused");
    if (decoder)
    {
        DataType in[] = {DataType::kINT32, DataType::kINT32};
        DataType out[1] = {};
        check(decoder->getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == DataType::kFLOAT, "decoder outputs float");
        PluginFieldCollection const* serialized = decoder->getFieldsToSerialize();
        IPluginV3* again = decodeCreator->createPlugin("x.decode", serialized, TensorRTPhase::kRUNTIME);
        check(again != nullptr, "decoder recreated from its serialized fields");
        delete again;
        delete decoder;
    }
    std::printf("%s (%d failures)\n", gFailures ? "FAILED" : "OK", gFailures);
    return gFailures ? 1 : 0;
}
