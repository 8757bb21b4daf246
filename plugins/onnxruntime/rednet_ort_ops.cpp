// Entry point of librednet_ort_ops.so: registers domain "rednet" (op Involution, v1) with an ONNX Runtime session.
// Load it with SessionOptions.register_custom_ops_library(path) (Python) or Ort::SessionOptions::RegisterCustomOpsLibrary.
#include <memory>
#include <mutex>
#include <vector>

#include "involution/InvolutionOp.h"

namespace {

constexpr const char* kDomain = "rednet";
constexpr int kVersion = 1;

// One domain for the process: session options keep a pointer to it, so it must outlive every session.
Ort::CustomOpDomain& Domain() {
  static std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>> ops;
  static Ort::CustomOpDomain domain = [] {
    using namespace rednet::ort;
    ops.emplace_back(Ort::Custom::CreateLiteCustomOp<InvolutionCpu<float>>("Involution", "CPUExecutionProvider", kVersion));
    ops.emplace_back(Ort::Custom::CreateLiteCustomOp<InvolutionCpu<Ort::Float16_t>>("Involution", "CPUExecutionProvider", kVersion));
#ifdef REDNET_WITH_CUDA
    ops.emplace_back(Ort::Custom::CreateLiteCustomOp<InvolutionCuda<float>>("Involution", "CUDAExecutionProvider", kVersion));
    ops.emplace_back(Ort::Custom::CreateLiteCustomOp<InvolutionCuda<Ort::Float16_t>>("Involution", "CUDAExecutionProvider", kVersion));
#endif
    Ort::CustomOpDomain d(kDomain);
    for (auto& op : ops) d.Add(op.get());
    return d;
  }();
  return domain;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                            const OrtApiBase* api_base) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;  // a runtime older than our headers: it reports the missing op itself
  Ort::InitApi(api);
  try {
    Ort::UnownedSessionOptions(options).Add(Domain());
    return nullptr;
  } catch (const std::exception& e) {
    return Ort::Status(e).release();
  }
}
