/*
 * What both codec plugins share: reading creation fields (the ONNX node's
 * attributes as the parser's plugin fallback hands them over), pinned host
 * buffers, and reporting an error through TensorRT's logger.
 */
#ifndef SLICER_PLUGIN_UTILS_H
#define SLICER_PLUGIN_UTILS_H

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace slicer
{
namespace plugin
{

//! Report an error (to the logger TensorRT set through setLoggerFinder, else stderr).
void logError(char const* pluginName, std::string const& message) noexcept;

//! The named field as an integer: ONNX ints may arrive as kINT32 or kINT64.
std::optional<int64_t> intField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept;
//! The named field as a float: kFLOAT32 or kFLOAT64.
std::optional<float> floatField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept;
//! The named field as a string (kCHAR, not necessarily NUL-terminated).
std::optional<std::string> stringField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept;

//! Product of dims, or -1 if any is unknown (negative).
int64_t volume(nvinfer1::Dims const& dims) noexcept;

//! A page-locked host buffer, so that copies to and from the device run on the stream.
class PinnedBuffer
{
public:
    PinnedBuffer() = default;
    PinnedBuffer(PinnedBuffer const&) = delete;
    PinnedBuffer& operator=(PinnedBuffer const&) = delete;
    ~PinnedBuffer();

    //! Grow to at least `bytes` (contents are not kept); false if cudaMallocHost fails.
    bool reserve(size_t bytes) noexcept;
    template <typename T>
    T* as() const noexcept
    {
        return static_cast<T*>(mData);
    }
    size_t bytes() const noexcept
    {
        return mBytes;
    }

private:
    void* mData{nullptr};
    size_t mBytes{0};
};

} // namespace plugin
} // namespace slicer

#endif // SLICER_PLUGIN_UTILS_H
