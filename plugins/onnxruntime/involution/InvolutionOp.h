// rednet::Involution for ONNX Runtime (lite custom-op API). CPU kernels in fp32/fp16 run on ONNX Runtime's
// intra-op thread pool; the CUDA kernel (built when nvcc is present) runs on the session's compute stream.
#pragma once

#include <optional>
#include <string>

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>
#undef ORT_API_MANUAL_INIT

#include "involution_contract.h"

namespace rednet::ort {

// scale and shift are required by the contract; declared optional to ONNX Runtime only so that a node without them
// (an export from before the fused epilogue) gets an error saying so instead of the API's bare index error.
template <typename T>
using OptionalInput = std::optional<const Ort::Custom::Tensor<T>*>;

// Reads and checks the attributes once per kernel; an invalid node keeps its error and reports it from Compute
// (kernel creation has no status channel in the lite API, and an exception there would cross a C boundary).
class InvolutionKernelBase {
 public:
  InvolutionKernelBase(const OrtApi* api, const OrtKernelInfo* info) noexcept;

 protected:
  // OK when the inputs' shapes (x, weight, scale, shift) match the contract; fills `shape`.
  template <typename T>
  Ort::Status CheckInputs(const Ort::Custom::Tensor<T>& x, const Ort::Custom::Tensor<T>& weight,
                          OptionalInput<T> scale, OptionalInput<T> shift, InvolutionShape* shape) const;
  InvolutionAttrs attrs_;
  std::string error_;
};

template <typename T>
class InvolutionCpu : public InvolutionKernelBase {
 public:
  using InvolutionKernelBase::InvolutionKernelBase;
  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                      const Ort::Custom::Tensor<T>& weight, OptionalInput<T> scale, OptionalInput<T> shift,
                      Ort::Custom::Tensor<T>& y);
};

#ifdef REDNET_WITH_CUDA
template <typename T>
class InvolutionCuda : public InvolutionKernelBase {
 public:
  using InvolutionKernelBase::InvolutionKernelBase;
  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                      const Ort::Custom::Tensor<T>& weight, OptionalInput<T> scale, OptionalInput<T> shift,
                      Ort::Custom::Tensor<T>& y);
};
#endif

}  // namespace rednet::ort
