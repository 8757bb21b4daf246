// TensorRT plugin "Involution" v1 (namespace ""): IPluginV3 with the OneCore/OneBuild/OneRuntime capabilities.
// It mirrors spec/Involution.yaml (see Involution_PluginConfig.yaml) and runs the shared CUDA kernel.
// Header-only against TensorRT 10.x (>= 10.8) and 11.x: nothing here links libnvinfer.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "involution_contract.h"

namespace rednet::trt {

inline constexpr const char* kPluginName = "Involution";
inline constexpr const char* kPluginVersion = "1";
inline constexpr const char* kPluginNamespace = "";

// Log through the logger TensorRT hands us (setLoggerFinder), or stderr when loaded without one.
void Log(nvinfer1::ILogger::Severity severity, const std::string& message) noexcept;
void SetLoggerFinder(nvinfer1::ILoggerFinder* finder);

class InvolutionPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit InvolutionPlugin(const InvolutionAttrs& attrs);
  InvolutionPlugin(const InvolutionPlugin& other);
  InvolutionPlugin& operator=(const InvolutionPlugin&) = delete;
  ~InvolutionPlugin() override = default;

  const InvolutionAttrs& attrs() const noexcept { return attrs_; }

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override { return kPluginName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nb_inputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nb_outputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* output_types, int32_t nb_outputs,
                             const nvinfer1::DataType* input_types, int32_t nb_inputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nb_inputs, const nvinfer1::DimsExprs* shape_inputs,
                          int32_t nb_shape_inputs, nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                          nvinfer1::IExprBuilder& builder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* in_out, int32_t nb_inputs,
                                 int32_t nb_outputs) noexcept override;
  int32_t getNbOutputs() const noexcept override { return 1; }
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc*, int32_t, const nvinfer1::DynamicPluginTensorDesc*,
                          int32_t) const noexcept override {
    return 0;
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* input_desc, const nvinfer1::PluginTensorDesc* output_desc,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 private:
  // "" when the runtime tensors match the contract; fills shape.
  std::string CheckTensors(const nvinfer1::PluginTensorDesc* in, int32_t nb_inputs, int32_t nb_outputs,
                           InvolutionShape* shape) const;

  InvolutionAttrs attrs_;
  int32_t serialized_[kNumAttributes] = {};  // storage behind getFieldsToSerialize
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

class InvolutionPluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  InvolutionPluginCreator();

  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override { return kPluginName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // Parses and checks the fields: "" and attrs filled, or the reason they are rejected.
  static std::string ParseFields(const nvinfer1::PluginFieldCollection* fc, InvolutionAttrs* attrs);

 private:
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace rednet::trt
