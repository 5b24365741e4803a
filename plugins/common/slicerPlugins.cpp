/*
 * The plugin library's entry points, the one place creators are registered.
 * IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, the Python
 * registry.load_library, slicer-compile's builder) looks up exactly these two.
 */
#include "../slicerDecodePlugin/slicerDecodePlugin.h"
#include "../slicerEncodePlugin/slicerEncodePlugin.h"

#include <NvInferRuntime.h>

// The library is built with hidden visibility; these two are its whole interface.
// (TENSORRTAPI exports only inside TensorRT's own build.)
#define SLICER_PLUGIN_EXPORT __attribute__((visibility("default")))

namespace slicer
{
namespace plugin
{
nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};
} // namespace plugin
} // namespace slicer

extern "C" SLICER_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    slicer::plugin::gLoggerFinder = finder;
}

extern "C" SLICER_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static slicer::plugin::SlicerEncodePluginCreator encodeCreator;
    static slicer::plugin::SlicerDecodePluginCreator decodeCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&encodeCreator, &decodeCreator};
    nbCreators = 2;
    return creators;
}
