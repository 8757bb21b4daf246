// GPU check of the TensorRT plugin through its real interfaces: dlopen the plugin library, getCreators(),
// createPlugin() from fields, configurePlugin(), getOutputDataTypes(), onShapeChange(), enqueue() on device
// buffers, then compare with the contract's double-precision reference. Prints one JSON object; exit 0 only when
// every case is within tolerance (fp32: max rel 1e-5; fp16: max abs 1e-2 on O(1) data).
#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "involution_contract.h"
#include "reference.h"

using namespace nvinfer1;

namespace {

#define CUDA_OK(call)                                                                            \
  do {                                                                                           \
    cudaError_t e = (call);                                                                      \
    if (e != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

struct Case {
  rednet::InvolutionAttrs attrs;
  int64_t n, c, h, w;
};

template <typename T>
std::vector<T> Convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (sizeof(T) == 2) out[i] = __float2half_rn(v[i]);
    else out[i] = v[i];
  }
  return out;
}

template <typename T>
float ToFloat(T v) {
  if constexpr (sizeof(T) == 2) return __half2float(v);
  else return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s path/to/librednet_trt_plugin.so\n", argv[0]);
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "involution_plugin_gpu_check: no CUDA device\n");
    return 3;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  if (get_creators == nullptr || dlsym(lib, "setLoggerFinder") == nullptr) {
    std::fprintf(stderr, "%s does not export getCreators/setLoggerFinder\n", argv[1]);
    return 2;
  }
  int32_t count = 0;
  IPluginCreatorInterface* const* creators = get_creators(count);
  IPluginCreatorV3One* creator = nullptr;
  for (int32_t i = 0; i < count; ++i) {
    auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(c->getPluginName(), "Involution") == 0 && std::strcmp(c->getPluginVersion(), "1") == 0) creator = c;
  }
  if (creator == nullptr) {
    std::fprintf(stderr, "no Involution v1 creator in %s\n", argv[1]);
    return 1;
  }

  const std::vector<Case> cases = {
      {{3, 1, 1, 1, 2}, 2, 32, 112, 112}, {{7, 1, 3, 1, 4}, 2, 64, 56, 56},  {{7, 2, 3, 1, 8}, 1, 128, 57, 55},
      {{7, 1, 3, 1, 32}, 3, 512, 7, 7},   {{5, 2, 4, 2, 2}, 2, 40, 17, 23},  {{7, 1, 3, 1, 1}, 1, 20, 9, 300},
  };
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  int failures = 0;
  std::printf("{\"cases\": [\n");
  bool first = true;
  for (const Case& cs : cases) {
    rednet::InvolutionAttrs a = cs.attrs;
    a.activation = &cs - cases.data() < 3 ? rednet::kActivationNone : rednet::kActivationRelu;  // both epilogues
    const int64_t ho = rednet::InvolutionOutputSize(cs.h, a), wo = rednet::InvolutionOutputSize(cs.w, a);
    const int64_t x_dims[4] = {cs.n, cs.c, cs.h, cs.w}, w_dims[4] = {cs.n, a.groups * a.kernel_size * a.kernel_size, ho, wo};
    const int64_t c_dims[1] = {cs.c}, y_dims[4] = {cs.n, cs.c, ho, wo};
    // x, weight, scale, shift, y
    const int64_t* dims[5] = {x_dims, w_dims, c_dims, c_dims, y_dims};
    const int ranks[5] = {4, 4, 1, 1, 4};
    rednet::InvolutionShape shape;
    const size_t input_ranks[4] = {4, 4, 1, 1};
    rednet::CheckInvolutionShapes(a, dims, input_ranks, &shape);
    std::vector<float> x(cs.n * cs.c * cs.h * cs.w), w(w_dims[0] * w_dims[1] * ho * wo), sc(cs.c), sh(cs.c);
    for (auto& v : x) v = dist(rng);
    for (auto& v : w) v = dist(rng) * 0.3f;
    for (auto& v : sc) v = 1.0f + 0.3f * dist(rng);
    for (auto& v : sh) v = 0.5f * dist(rng);
    for (int fp16 = 0; fp16 < 2; ++fp16) {
      int32_t values[rednet::kNumAttributes];
      std::vector<PluginField> fields;
      for (size_t i = 0; i < rednet::kNumAttributes; ++i) {
        values[i] = int32_t(rednet::AttributeField(a, i));
        fields.emplace_back(rednet::kAttributeNames[i], &values[i], PluginFieldType::kINT32, 1);
      }
      PluginFieldCollection fc{int32_t(fields.size()), fields.data()};
      IPluginV3* plugin = creator->createPlugin("involution", &fc, TensorRTPhase::kRUNTIME);
      auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
      auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
      const DataType type = fp16 ? DataType::kHALF : DataType::kFLOAT;
      DynamicPluginTensorDesc dyn[5]{};
      PluginTensorDesc desc[5]{};
      for (int i = 0; i < 5; ++i) {
        desc[i].type = type;
        desc[i].format = TensorFormat::kLINEAR;
        desc[i].dims.nbDims = ranks[i];
        for (int d = 0; d < ranks[i]; ++d) desc[i].dims.d[d] = dims[i][d];
        dyn[i].desc = desc[i];
        dyn[i].min = dyn[i].max = dyn[i].opt = desc[i].dims;
      }
      DataType in_types[4] = {type, type, type, type}, out_type{};
      bool ok = build->configurePlugin(dyn, 4, dyn + 4, 1) == 0 && build->getOutputDataTypes(&out_type, 1, in_types, 4) == 0 &&
                out_type == type && runtime->onShapeChange(desc, 4, desc + 4, 1) == 0;
      for (int pos = 0; pos < 5; ++pos) ok = ok && build->supportsFormatCombination(pos, dyn, 4, 1);
      const size_t elem = fp16 ? 2 : 4;
      const std::vector<float>* host[4] = {&x, &w, &sc, &sh};
      std::vector<float> rounded[4];  // the values the device sees
      void* device[4];
      for (int i = 0; i < 4; ++i) {
        rounded[i] = *host[i];
        CUDA_OK(cudaMalloc(&device[i], rounded[i].size() * elem));
        if (fp16) {
          auto half = Convert<__half>(rounded[i]);
          for (size_t k = 0; k < half.size(); ++k) rounded[i][k] = __half2float(half[k]);
          CUDA_OK(cudaMemcpy(device[i], half.data(), half.size() * elem, cudaMemcpyHostToDevice));
        } else {
          CUDA_OK(cudaMemcpy(device[i], rounded[i].data(), rounded[i].size() * elem, cudaMemcpyHostToDevice));
        }
      }
      void* dy;
      CUDA_OK(cudaMalloc(&dy, cs.n * cs.c * ho * wo * elem));
      const void* inputs[4] = {device[0], device[1], device[2], device[3]};
      void* outputs[1] = {dy};
      ok = ok && runtime->enqueue(desc, desc + 4, inputs, outputs, nullptr, stream) == 0;
      CUDA_OK(cudaStreamSynchronize(stream));
      const auto ref = rednet::testing::ReferenceInvolution(rounded[0], rounded[1], rounded[2], rounded[3], a, shape);
      double max_abs = 0, magnitude = 1e-30;
      std::vector<float> y(ref.size());
      if (fp16) {
        std::vector<__half> yh(ref.size());
        CUDA_OK(cudaMemcpy(yh.data(), dy, yh.size() * elem, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < y.size(); ++i) y[i] = ToFloat(yh[i]);
      } else {
        CUDA_OK(cudaMemcpy(y.data(), dy, y.size() * elem, cudaMemcpyDeviceToHost));
      }
      for (size_t i = 0; i < y.size(); ++i) {
        max_abs = std::max(max_abs, std::abs(y[i] - ref[i]));
        magnitude = std::max(magnitude, std::abs(ref[i]));
      }
      const double max_rel = max_abs / magnitude;
      const bool pass = ok && (fp16 ? max_abs <= 1e-2 : max_rel <= 1e-5);
      failures += !pass;
      std::printf("%s  {\"x\": [%lld, %lld, %lld, %lld], \"kernel_size\": %lld, \"stride\": %lld, \"padding\": %lld, "
                  "\"dilation\": %lld, \"groups\": %lld, \"activation\": %lld, \"precision\": \"%s\", \"interfaces_ok\": %s, "
                  "\"max_abs\": %.3e, \"max_rel\": %.3e, \"passed\": %s}",
                  first ? "" : ",\n", (long long)cs.n, (long long)cs.c, (long long)cs.h, (long long)cs.w,
                  (long long)a.kernel_size, (long long)a.stride, (long long)a.padding, (long long)a.dilation,
                  (long long)a.groups, (long long)a.activation, fp16 ? "fp16" : "fp32", ok ? "true" : "false", max_abs, max_rel,
                  pass ? "true" : "false");
      first = false;
      for (void* d : device) cudaFree(d);
      cudaFree(dy);
      delete plugin;
    }
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("\n], \"gpu\": \"%s\", \"tensorrt_headers\": \"%d.%d\", \"failures\": %d}\n", prop.name, NV_TENSORRT_MAJOR,
              NV_TENSORRT_MINOR, failures);
  cudaStreamDestroy(stream);
  return failures == 0 ? 0 : 1;
}
