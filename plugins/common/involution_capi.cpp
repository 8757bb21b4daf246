// A C ABI over the CUDA launcher (librednet_cuda_capi.so), so Python (ctypes) can drive the exact kernel the
// TensorRT plugin and the ONNX Runtime CUDA op run, on torch/CuPy device buffers and streams.
#include <cstring>
#include <string>

#include "cuda_driver_check.h"
#include "involution_cuda.h"

extern "C" __attribute__((visibility("default"))) int rednet_involution_cuda(
    int fp16, const void* x, const void* weight, void* y, const int64_t attrs[5], const int64_t x_dims[4],
    const int64_t w_dims[4], void* stream, char* error, size_t error_size) {
  const rednet::InvolutionAttrs a{attrs[0], attrs[1], attrs[2], attrs[3], attrs[4]};
  rednet::InvolutionShape shape;
  std::string err = rednet::CheckInvolutionShapes(a, x_dims, 4, w_dims, 4, &shape);
  if (err.empty()) err = rednet::CudaDriverProblem();
  if (err.empty())
    err = rednet::LaunchInvolution(fp16 ? rednet::ElementType::kFloat16 : rednet::ElementType::kFloat32, x, weight, y,
                                   a, shape, static_cast<cudaStream_t>(stream));
  if (!err.empty() && error != nullptr && error_size > 0) {
    std::strncpy(error, err.c_str(), error_size - 1);
    error[error_size - 1] = '\0';
  }
  return err.empty() ? 0 : 1;
}
