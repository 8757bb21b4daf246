// A C ABI over the CUDA launcher (librednet_cuda_capi.so), so Python (ctypes) can drive the exact kernels the
// TensorRT plugin and the ONNX Runtime CUDA op run, on torch's device buffers and streams: rednet::involution's
// CUDA implementation (rednet/ops/cuda.py) and `make gpu-check` (deploy/gpu_check.py).
#include <cstring>
#include <iterator>
#include <optional>
#include <string>

#include "cuda_driver_check.h"
#include "involution_cuda.h"

namespace {

// Return codes: 0 launched; 1 refused (contract, layout, driver, an unknown kernel name) or the launch failed;
// 2 the named kernel does not fit this problem (its table row's shape, channel or alignment rules).
enum : int { kLaunched = 0, kFailed = 1, kDoesNotFit = 2 };

// "PerPixel,K3S1,...": the names `kernel` takes, in the launcher table's order.
const std::string& KernelNames() {
  static const std::string names = [] {
    std::string joined;
    for (const char* name : rednet::kKernelNames) joined += std::string(joined.empty() ? "" : ",") + name;
    return joined;
  }();
  return names;
}

std::string Launch(int fp16, const void* x, const void* weight, const void* scale, const void* shift, void* y,
                   const int64_t attrs[rednet::kNumAttributes], const int64_t x_dims[4], const int64_t w_dims[4],
                   int channel_last, const int64_t pitches[3], const char* kernel, void* stream, int* code) {
  rednet::InvolutionAttrs a;
  for (size_t i = 0; i < rednet::kNumAttributes; ++i) rednet::AttributeField(a, i) = attrs[i];
  const int64_t* dims[rednet::kNumInputs] = {x_dims, w_dims, x_dims + 1, x_dims + 1};
  const size_t ranks[rednet::kNumInputs] = {4, 4, 1, 1};
  rednet::InvolutionShape shape;
  std::string err = rednet::CheckInvolutionShapes(a, dims, ranks, &shape);
  if (!err.empty()) return err;
  rednet::TensorLayout layout;
  if (channel_last) {
    if (pitches == nullptr) return "involution: channel_last=1 needs the three channel pitches";
    layout = {rednet::Layout::kNHWC, pitches[0], pitches[1], pitches[2]};
    if (!(err = rednet::CheckTensorLayout(layout, a, shape)).empty()) return err;
  }
  const rednet::ElementType type = fp16 ? rednet::ElementType::kFloat16 : rednet::ElementType::kFloat32;
  std::optional<rednet::KernelId> named;
  if (kernel != nullptr && kernel[0] != '\0') {
    for (size_t i = 0; i < std::size(rednet::kKernelNames); ++i)
      if (std::strcmp(kernel, rednet::kKernelNames[i]) == 0) named = rednet::KernelId(i);
    if (!named) return std::string("involution: unknown CUDA kernel '") + kernel + "' (kernels: " + KernelNames() + ")";
    if (!rednet::InvolutionKernelFits(*named, rednet::MakeInvolutionProblem(type, x, y, a, shape, layout))) {
      *code = kDoesNotFit;
      return std::string("involution: kernel ") + kernel + " does not fit kernel_size=" + std::to_string(a.kernel_size) +
             ", stride=" + std::to_string(a.stride) + ", x " + rednet::DimsToString(x_dims, 4) + " in this type and layout";
    }
  }
  if (!(err = rednet::CudaDriverProblem()).empty()) return err;
  return rednet::LaunchInvolution(type, x, weight, scale, shift, y, a, shape, static_cast<cudaStream_t>(stream), layout,
                                  named);
}

}  // namespace

// attrs: the contract's attributes in order (kernel_size, stride, padding, dilation, groups, activation); x_dims and
// w_dims in the contract's (N, C, H, W) order whatever the layout; scale and shift hold x_dims[1] values each.
// channel_last 0: NCHW (pitches ignored, may be null); 1: [N][H][W][pitch] with pitches[3] = the channel pitches of
// x, weight and y in elements. kernel: null or "" for the launcher's choice, else a kernel of the launcher's table
// by name (kKernelNames in involution_cuda_tiled.h; benchmarks and parity run each). Returns 0, or 1 / 2 (see the
// return codes above) with the reason in error (error_size bytes, NUL-terminated).
extern "C" __attribute__((visibility("default"))) int rednet_involution_cuda(
    int fp16, const void* x, const void* weight, const void* scale, const void* shift, void* y,
    const int64_t attrs[rednet::kNumAttributes], const int64_t x_dims[4], const int64_t w_dims[4], int channel_last,
    const int64_t pitches[3], const char* kernel, void* stream, char* error, size_t error_size) {
  std::string err;
  int code = kFailed;
  try {
    err = Launch(fp16, x, weight, scale, shift, y, attrs, x_dims, w_dims, channel_last, pitches, kernel, stream, &code);
  } catch (const std::exception& e) {  // nothing may unwind into the caller's C frames
    err = std::string("involution: ") + e.what();
  }
  if (!err.empty() && error != nullptr && error_size > 0) {
    std::strncpy(error, err.c_str(), error_size - 1);
    error[error_size - 1] = '\0';
  }
  return err.empty() ? kLaunched : code;
}

// The kernel names rednet_involution_cuda's `kernel` takes, comma-separated.
extern "C" __attribute__((visibility("default"))) const char* rednet_involution_cuda_kernels() {
  return KernelNames().c_str();
}
