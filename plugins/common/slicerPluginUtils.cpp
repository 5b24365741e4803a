#include "slicerPluginUtils.h"

#include <cstdio>

namespace slicer
{
namespace plugin
{

// Set by setLoggerFinder() when TensorRT loads the library (slicerPlugins.cpp).
extern nvinfer1::ILoggerFinder* gLoggerFinder;

void logError(char const* pluginName, std::string const& message) noexcept
{
    std::string const line = std::string(pluginName) + ": " + message;
    nvinfer1::ILogger* logger = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
    if (logger)
    {
        logger->log(nvinfer1::ILogger::Severity::kERROR, line.c_str());
    }
    else
    {
        std::fprintf(stderr, "%s\n", line.c_str());
    }
}

namespace
{
nvinfer1::PluginField const* find(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept
{
    if (!fc)
    {
        return nullptr;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fc->fields[i];
        if (field.name && field.data && field.length >= 1 && std::strcmp(field.name, name) == 0)
        {
            return &field;
        }
    }
    return nullptr;
}
} // namespace

std::optional<int64_t> intField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept
{
    nvinfer1::PluginField const* field = find(fc, name);
    if (!field)
    {
        return std::nullopt;
    }
    switch (field->type)
    {
    case nvinfer1::PluginFieldType::kINT32: return *static_cast<int32_t const*>(field->data);
    case nvinfer1::PluginFieldType::kINT64: return *static_cast<int64_t const*>(field->data);
    default: return std::nullopt;
    }
}

std::optional<float> floatField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept
{
    nvinfer1::PluginField const* field = find(fc, name);
    if (!field)
    {
        return std::nullopt;
    }
    switch (field->type)
    {
    case nvinfer1::PluginFieldType::kFLOAT32: return *static_cast<float const*>(field->data);
    case nvinfer1::PluginFieldType::kFLOAT64: return static_cast<float>(*static_cast<double const*>(field->data));
    default: return std::nullopt;
    }
}

std::optional<std::string> stringField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept
{
    nvinfer1::PluginField const* field = find(fc, name);
    if (!field || field->type != nvinfer1::PluginFieldType::kCHAR)
    {
        return std::nullopt;
    }
    char const* text = static_cast<char const*>(field->data);
    return std::string(text, strnlen(text, static_cast<size_t>(field->length)));
}

int64_t volume(nvinfer1::Dims const& dims) noexcept
{
    int64_t n = 1;
    for (int32_t d = 0; d < dims.nbDims; ++d)
    {
        if (dims.d[d] < 0)
        {
            return -1;
        }
        n *= dims.d[d];
    }
    return n;
}

PinnedBuffer::~PinnedBuffer()
{
    if (mData)
    {
        cudaFreeHost(mData);
    }
}

bool PinnedBuffer::reserve(size_t bytes) noexcept
{
    if (bytes <= mBytes)
    {
        return true;
    }
    if (mData)
    {
        cudaFreeHost(mData);
        mData = nullptr;
        mBytes = 0;
    }
    if (cudaMallocHost(&mData, bytes) != cudaSuccess)
    {
        mData = nullptr;
        return false;
    }
    mBytes = bytes;
    return true;
}

} // namespace plugin
} // namespace slicer
