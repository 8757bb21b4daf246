// The CUDA involution kernel shared by the TensorRT plugin and the ONNX Runtime CUDA op.
// Launch-only: runs on the caller's stream, allocates nothing and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <optional>
#include <string>

#include "involution_contract.h"
#include "involution_cuda_layout.h"
#include "involution_cuda_tiled.h"

namespace rednet {

enum class ElementType { kFloat32, kFloat16 };

// x (N, C, H, W), weight (N, G*K*K, Ho, Wo), y (N, C, Ho, Wo) on the device in `layout` (NCHW, or channel-last
// with channel pitches: TensorRT's kHWC / kHWC8), scale and shift plain (C,) arrays; all the same type. `shape`
// must come from CheckInvolutionShapes. The kernel is chosen per shape (ChooseInvolutionKernel,
// involution_cuda_tiled.h) unless `kernel` names one (benchmarks, device parity of every kernel; an error where it
// does not fit). Returns "" or the error (bad layout pitches, null pointers, a kernel that does not fit, the launch's).
std::string LaunchInvolution(ElementType type, const void* x, const void* weight, const void* scale, const void* shift,
                             void* y, const InvolutionAttrs& attrs, const InvolutionShape& shape, cudaStream_t stream,
                             const TensorLayout& layout = {}, std::optional<KernelId> kernel = {});

}  // namespace rednet
