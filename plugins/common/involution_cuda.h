// The CUDA involution kernel shared by the TensorRT plugin and the ONNX Runtime CUDA op.
// Launch-only: runs on the caller's stream, allocates nothing and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "involution_contract.h"

namespace rednet {

enum class ElementType { kFloat32, kFloat16 };

// x (N, C, H, W), weight (N, G*K*K, Ho, Wo), scale and shift (C), y (N, C, Ho, Wo), all linear NCHW on the device,
// same type. `shape` must come from CheckInvolutionShapes. Returns "" or the launch error.
std::string LaunchInvolution(ElementType type, const void* x, const void* weight, const void* scale, const void* shift,
                             void* y, const InvolutionAttrs& attrs, const InvolutionShape& shape, cudaStream_t stream);

}  // namespace rednet
