// A C ABI over the CUDA launcher (librednet_cuda_capi.so), so Python (ctypes) can drive the exact kernel the
// TensorRT plugin and the ONNX Runtime CUDA op run, on torch/CuPy device buffers and streams.
#include <cstring>
#include <string>

#include "cuda_driver_check.h"
#include "involution_cuda.h"

// attrs: the contract's attributes in order (kernel_size, stride, padding, dilation, groups, activation);
// scale and shift hold x_dims[1] values each.
extern "C" __attribute__((visibility("default"))) int rednet_involution_cuda(
    int fp16, const void* x, const void* weight, const void* scale, const void* shift, void* y,
    const int64_t attrs[rednet::kNumAttributes], const int64_t x_dims[4], const int64_t w_dims[4], void* stream,
    char* error, size_t error_size) {
  rednet::InvolutionAttrs a;
  for (size_t i = 0; i < rednet::kNumAttributes; ++i) rednet::AttributeField(a, i) = attrs[i];
  const int64_t* dims[rednet::kNumInputs] = {x_dims, w_dims, x_dims + 1, x_dims + 1};
  const size_t ranks[rednet::kNumInputs] = {4, 4, 1, 1};
  rednet::InvolutionShape shape;
  std::string err = rednet::CheckInvolutionShapes(a, dims, ranks, &shape);
  if (err.empty()) err = rednet::CudaDriverProblem();
  if (err.empty())
    err = rednet::LaunchInvolution(fp16 ? rednet::ElementType::kFloat16 : rednet::ElementType::kFloat32, x, weight,
                                   scale, shift, y, a, shape, static_cast<cudaStream_t>(stream));
  if (!err.empty() && error != nullptr && error_size > 0) {
    std::strncpy(error, err.c_str(), error_size - 1);
    error[error_size - 1] = '\0';
  }
  return err.empty() ? 0 : 1;
}
