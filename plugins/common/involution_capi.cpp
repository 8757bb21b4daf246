// A C ABI over the CUDA launcher (librednet_cuda_capi.so), so Python (ctypes) can drive the exact kernel the
// TensorRT plugin and the ONNX Runtime CUDA op run, on torch's device buffers and streams: rednet::involution's
// CUDA implementation (rednet/ops/cuda.py) and `make gpu-check` (deploy/gpu_check.py).
#include <cstring>
#include <string>

#include "cuda_driver_check.h"
#include "involution_cuda.h"

namespace {

// The kernel names `kernel` may ask for; "" (or null) leaves the choice to the launcher.
constexpr const char* kPerPixelKernel = "PerPixel";

// Return codes: 0 launched; 1 refused (contract, driver, an unknown kernel name) or the launch failed; 2 this build
// has no kernel for the request (a layout, or a named kernel that does not run this problem).
enum : int { kLaunched = 0, kFailed = 1, kUnsupported = 2 };

std::string Launch(int fp16, const void* x, const void* weight, const void* scale, const void* shift, void* y,
                   const int64_t attrs[rednet::kNumAttributes], const int64_t x_dims[4], const int64_t w_dims[4],
                   int channel_last, const char* kernel, void* stream, int* code) {
  rednet::InvolutionAttrs a;
  for (size_t i = 0; i < rednet::kNumAttributes; ++i) rednet::AttributeField(a, i) = attrs[i];
  const int64_t* dims[rednet::kNumInputs] = {x_dims, w_dims, x_dims + 1, x_dims + 1};
  const size_t ranks[rednet::kNumInputs] = {4, 4, 1, 1};
  rednet::InvolutionShape shape;
  std::string err = rednet::CheckInvolutionShapes(a, dims, ranks, &shape);
  if (!err.empty()) return err;
  if (channel_last) {
    *code = kUnsupported;
    return "involution: this build's CUDA launcher runs NCHW tensors only (channel_last=1 given)";
  }
  if (kernel != nullptr && kernel[0] != '\0' && std::strcmp(kernel, kPerPixelKernel) != 0)
    return std::string("involution: unknown CUDA kernel '") + kernel + "' (this build has: " + kPerPixelKernel + ")";
  if (!(err = rednet::CudaDriverProblem()).empty()) return err;
  return rednet::LaunchInvolution(fp16 ? rednet::ElementType::kFloat16 : rednet::ElementType::kFloat32, x, weight,
                                  scale, shift, y, a, shape, static_cast<cudaStream_t>(stream));
}

}  // namespace

// attrs: the contract's attributes in order (kernel_size, stride, padding, dilation, groups, activation); x_dims and
// w_dims in the contract's (N, C, H, W) order whatever the layout; scale and shift hold x_dims[1] values each.
// channel_last 0: NCHW; 1: [N][H][W][pitch] with pitches[3] = the channel pitches of x, weight, y in elements.
// kernel: null or "" for the launcher's choice, else a kernel by name (benchmarks compare them).
// Returns 0, or 1 / 2 (see the return codes above) with the reason in error (error_size bytes, NUL-terminated).
extern "C" __attribute__((visibility("default"))) int rednet_involution_cuda(
    int fp16, const void* x, const void* weight, const void* scale, const void* shift, void* y,
    const int64_t attrs[rednet::kNumAttributes], const int64_t x_dims[4], const int64_t w_dims[4], int channel_last,
    const int64_t pitches[3], const char* kernel, void* stream, char* error, size_t error_size) {
  std::string err;
  int code = kFailed;
  try {
    err = Launch(fp16, x, weight, scale, shift, y, attrs, x_dims, w_dims, channel_last, kernel, stream, &code);
  } catch (const std::exception& e) {  // nothing may unwind into the caller's C frames
    err = std::string("involution: ") + e.what();
  }
  if (!err.empty() && error != nullptr && error_size > 0) {
    std::strncpy(error, err.c_str(), error_size - 1);
    error[error_size - 1] = '\0';
  }
  return err.empty() ? kLaunched : code;
}
