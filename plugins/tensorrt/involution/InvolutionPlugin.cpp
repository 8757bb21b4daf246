#include "InvolutionPlugin.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "cuda_driver_check.h"
#include "involution_cuda.h"

using namespace nvinfer1;

namespace rednet::trt {
namespace {

std::mutex g_logger_mutex;
ILoggerFinder* g_logger_finder = nullptr;

const char* TypeName(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return "fp32";
    case DataType::kHALF: return "fp16";
    default: return "unsupported";
  }
}

bool Supported(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

std::string IoCountProblem(int32_t nb_inputs, int32_t nb_outputs) {
  if (nb_inputs == kNumInputs && nb_outputs == 1) return {};
  return "expects " + std::to_string(kNumInputs) + " inputs (x, weight, scale, shift) and 1 output, got " +
         std::to_string(nb_inputs) + " and " + std::to_string(nb_outputs);
}

// "" when every input has x's type and that type is supported.
std::string TypeProblem(const DataType* types) {
  bool same = Supported(types[0]);
  for (int i = 1; i < kNumInputs; ++i) same = same && types[i] == types[0];
  if (same) return {};
  std::string got;
  for (int i = 0; i < kNumInputs; ++i) got += std::string(i ? ", " : "") + kInputNames[i] + " " + TypeName(types[i]);
  return "x, weight, scale and shift must all be fp32 or all fp16, got " + got;
}

std::string FieldName(size_t i) { return kAttributeNames[i]; }

}  // namespace

void SetLoggerFinder(ILoggerFinder* finder) {
  std::lock_guard<std::mutex> lock(g_logger_mutex);
  if (g_logger_finder == nullptr && finder != nullptr) g_logger_finder = finder;
}

void Log(ILogger::Severity severity, const std::string& message) noexcept {
  try {
    const std::string text = std::string("[rednet Involution plugin] ") + message;
    ILogger* logger = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_logger_mutex);
      if (g_logger_finder != nullptr) logger = g_logger_finder->findLogger();
    }
    if (logger != nullptr) {
      logger->log(severity, text.c_str());
    } else if (severity <= ILogger::Severity::kWARNING) {
      std::fprintf(stderr, "%s\n", text.c_str());
    }
  } catch (...) {
  }
}

// ---- plugin ---------------------------------------------------------------------------------------------------

InvolutionPlugin::InvolutionPlugin(const InvolutionAttrs& attrs) : attrs_(attrs) {
  fields_.reserve(kNumAttributes);
  for (size_t i = 0; i < kNumAttributes; ++i) {
    // the contract bounds every attribute far below 2^31
    serialized_[i] = static_cast<int32_t>(AttributeField(attrs_, i));
    fields_.emplace_back(kAttributeNames[i], &serialized_[i], PluginFieldType::kINT32, 1);
  }
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
}

InvolutionPlugin::InvolutionPlugin(const InvolutionPlugin& other) : InvolutionPlugin(other.attrs_) {}

IPluginCapability* InvolutionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

IPluginV3* InvolutionPlugin::clone() noexcept {
  try {
    return new InvolutionPlugin(*this);
  } catch (...) {
    Log(ILogger::Severity::kERROR, "clone failed: out of memory");
    return nullptr;
  }
}

int32_t InvolutionPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nb_inputs,
                                          const DynamicPluginTensorDesc* out, int32_t nb_outputs) noexcept {
  if (const std::string err = IoCountProblem(nb_inputs, nb_outputs); !err.empty()) {
    Log(ILogger::Severity::kERROR, err);
    return -1;
  }
  const Dims& x = in[0].desc.dims;
  const Dims& w = in[1].desc.dims;
  if (x.nbDims != 4 || w.nbDims != 4 || in[2].desc.dims.nbDims != 1 || in[3].desc.dims.nbDims != 1) {
    Log(ILogger::Severity::kERROR, "x and weight must have rank 4 and scale, shift rank 1, got " +
                                       std::to_string(x.nbDims) + ", " + std::to_string(w.nbDims) + ", " +
                                       std::to_string(in[2].desc.dims.nbDims) + " and " +
                                       std::to_string(in[3].desc.dims.nbDims));
    return -1;
  }
  // Channel counts are static in any real network; check what is known now (-1 = dynamic).
  if (x.d[1] > 0 && x.d[1] % attrs_.groups != 0) {
    Log(ILogger::Severity::kERROR, "channels C=" + std::to_string(x.d[1]) + " is not divisible by groups=" +
                                       std::to_string(attrs_.groups));
    return -1;
  }
  const int64_t taps = attrs_.groups * attrs_.kernel_size * attrs_.kernel_size;
  if (w.d[1] > 0 && w.d[1] != taps) {
    Log(ILogger::Severity::kERROR, "weight has " + std::to_string(w.d[1]) + " channels, the contract needs groups*K*K=" +
                                       std::to_string(taps));
    return -1;
  }
  for (int i = 2; i < kNumInputs; ++i)
    if (x.d[1] > 0 && in[i].desc.dims.d[0] > 0 && in[i].desc.dims.d[0] != x.d[1]) {
      Log(ILogger::Severity::kERROR, std::string(kInputNames[i]) + " has " + std::to_string(in[i].desc.dims.d[0]) +
                                         " values, the contract needs C=" + std::to_string(x.d[1]));
      return -1;
    }
  return 0;
}

int32_t InvolutionPlugin::getOutputDataTypes(DataType* output_types, int32_t nb_outputs, const DataType* input_types,
                                             int32_t nb_inputs) const noexcept {
  if (!IoCountProblem(nb_inputs, nb_outputs).empty()) return -1;
  if (const std::string err = TypeProblem(input_types); !err.empty()) {
    Log(ILogger::Severity::kERROR, err);
    return -1;
  }
  output_types[0] = input_types[0];
  return 0;
}

int32_t InvolutionPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nb_inputs, const DimsExprs*, int32_t,
                                          DimsExprs* outputs, int32_t nb_outputs, IExprBuilder& builder) noexcept {
  if (nb_inputs != kNumInputs || nb_outputs != 1 || inputs[0].nbDims != 4) {
    Log(ILogger::Severity::kERROR, "getOutputShapes: expects x of rank 4 and one output");
    return -1;
  }
  // Ho = floor((H + 2*padding - dilation*(K-1) - 1) / stride) + 1, as expressions so N/H/W may be dynamic.
  const int64_t shift = 2 * attrs_.padding - attrs_.dilation * (attrs_.kernel_size - 1) - 1;
  auto out_size = [&](const IDimensionExpr* size) {
    const IDimensionExpr* span = builder.operation(DimensionOperation::kSUM, *size, *builder.constant(shift));
    const IDimensionExpr* steps = builder.operation(DimensionOperation::kFLOOR_DIV, *span, *builder.constant(attrs_.stride));
    return builder.operation(DimensionOperation::kSUM, *steps, *builder.constant(1));
  };
  outputs[0].nbDims = 4;
  outputs[0].d[0] = inputs[0].d[0];
  outputs[0].d[1] = inputs[0].d[1];
  outputs[0].d[2] = out_size(inputs[0].d[2]);
  outputs[0].d[3] = out_size(inputs[0].d[3]);
  return 0;
}

bool InvolutionPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* in_out, int32_t nb_inputs,
                                                 int32_t nb_outputs) noexcept {
  if (nb_inputs != kNumInputs || nb_outputs != 1 || pos < 0 || pos > kNumInputs) return false;
  const PluginTensorDesc& desc = in_out[pos].desc;
  if (desc.format != TensorFormat::kLINEAR || !Supported(desc.type)) return false;
  return pos == 0 || desc.type == in_out[0].desc.type;  // one type for every input and y
}

std::string InvolutionPlugin::CheckTensors(const PluginTensorDesc* in, int32_t nb_inputs, int32_t nb_outputs,
                                           InvolutionShape* shape) const {
  if (std::string err = IoCountProblem(nb_inputs, nb_outputs); !err.empty()) return err;
  DataType types[kNumInputs];
  const int64_t* dims[kNumInputs];
  size_t ranks[kNumInputs];
  for (int i = 0; i < kNumInputs; ++i) {
    types[i] = in[i].type;
    dims[i] = in[i].dims.d;
    ranks[i] = static_cast<size_t>(std::max(0, in[i].dims.nbDims));
  }
  if (std::string err = TypeProblem(types); !err.empty()) return err;
  return CheckInvolutionShapes(attrs_, dims, ranks, shape);
}

int32_t InvolutionPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nb_inputs, const PluginTensorDesc*,
                                        int32_t nb_outputs) noexcept {
  InvolutionShape shape;
  const std::string err = CheckTensors(in, nb_inputs, nb_outputs, &shape);
  if (!err.empty()) {
    Log(ILogger::Severity::kERROR, err);
    return -1;
  }
  return 0;
}

int32_t InvolutionPlugin::enqueue(const PluginTensorDesc* input_desc, const PluginTensorDesc*,
                                  const void* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept {
  InvolutionShape shape;
  std::string err = CheckTensors(input_desc, kNumInputs, 1, &shape);
  if (err.empty()) err = CudaDriverProblem();  // else the launch fails with a bare cudaErrorInsufficientDriver
  if (err.empty()) {
    const ElementType type = input_desc[0].type == DataType::kHALF ? ElementType::kFloat16 : ElementType::kFloat32;
    err = LaunchInvolution(type, inputs[0], inputs[1], inputs[2], inputs[3], outputs[0], attrs_, shape, stream);
  }
  if (!err.empty()) {
    Log(ILogger::Severity::kERROR, err);
    return -1;
  }
  return 0;
}

IPluginV3* InvolutionPlugin::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

const PluginFieldCollection* InvolutionPlugin::getFieldsToSerialize() noexcept { return &collection_; }

// ---- creator --------------------------------------------------------------------------------------------------

InvolutionPluginCreator::InvolutionPluginCreator() {
  for (const char* name : kAttributeNames) fields_.emplace_back(name, nullptr, PluginFieldType::kINT32, 1);
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
}

std::string InvolutionPluginCreator::ParseFields(const PluginFieldCollection* fc, InvolutionAttrs* attrs) {
  if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr)) return "no plugin fields given";
  bool seen[kNumAttributes] = {};
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    const PluginField& field = fc->fields[i];
    if (field.name == nullptr) return "plugin field " + std::to_string(i) + " has no name";
    size_t index = kNumAttributes;
    for (size_t k = 0; k < kNumAttributes; ++k)
      if (std::strcmp(field.name, kAttributeNames[k]) == 0) index = k;
    if (index == kNumAttributes) {
      // the ONNX parser may pass the node's routing attributes (plugin_version, plugin_namespace) along
      Log(ILogger::Severity::kVERBOSE, std::string("ignoring plugin field '") + field.name + "'");
      continue;
    }
    if (seen[index]) return "field '" + FieldName(index) + "' given twice";
    if (field.data == nullptr || field.length != 1)
      return "field '" + FieldName(index) + "' must hold exactly one integer (length " + std::to_string(field.length) + ")";
    int64_t& target = AttributeField(*attrs, index);
    switch (field.type) {
      case PluginFieldType::kINT32: target = *static_cast<const int32_t*>(field.data); break;
      case PluginFieldType::kINT64: target = *static_cast<const int64_t*>(field.data); break;
      case PluginFieldType::kINT16: target = *static_cast<const int16_t*>(field.data); break;
      case PluginFieldType::kINT8: target = *static_cast<const int8_t*>(field.data); break;
      default: return "field '" + FieldName(index) + "' must be an integer field";
    }
    seen[index] = true;
  }
  for (size_t k = 0; k < kNumAttributes; ++k)
    if (!seen[k] && AttributeRequired(k)) return "missing field '" + FieldName(k) + "'";
  return CheckInvolutionAttrs(*attrs);
}

IPluginV3* InvolutionPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                 TensorRTPhase) noexcept {
  try {
    InvolutionAttrs attrs;
    const std::string err = ParseFields(fc, &attrs);
    if (!err.empty()) {
      Log(ILogger::Severity::kERROR, std::string("cannot create '") + (name ? name : "") + "': " + err);
      return nullptr;
    }
    return new InvolutionPlugin(attrs);
  } catch (...) {
    Log(ILogger::Severity::kERROR, "createPlugin failed: out of memory");
    return nullptr;
  }
}

}  // namespace rednet::trt
