// Entry points of librednet_trt_plugin.so for IPluginRegistry::loadLibrary, trt.get_plugin_registry().load_library,
// trtexec --dynamicPlugins and Triton's --backend-config=tensorrt,plugins=...; rednet_cuda_driver_problem
// (common/cuda_driver_check.h) is the third export. A version script keeps every other symbol local.
#include "involution/InvolutionPlugin.h"

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static rednet::trt::InvolutionPluginCreator involution;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&involution};
  nbCreators = 1;
  return creators;
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  rednet::trt::SetLoggerFinder(finder);
}
