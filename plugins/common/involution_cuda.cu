// CUDA involution. One thread per output pixel (n, g, ho, wo) of a group (involution_cuda_pixel.h): each kernel
// tap's weight is loaded once (coalesced across wo) and applied to a block of the group's channels held in
// registers, so the weight tensor, the largest operand, is read exactly once; x is re-read per tap from L1/L2.
// Accumulation is fp32 for fp16 I/O. Indices are 64-bit; a grid-stride loop covers any size.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "involution_cuda.h"
#include "involution_cuda_pixel.h"

namespace rednet {
namespace {

constexpr int kThreads = 256;

struct LoadHalf {
  __device__ float operator()(const __half* p) const { return __half2float(__ldg(p)); }
};
struct LoadFloat {
  __device__ float operator()(const float* p) const { return __ldg(p); }
};
struct StoreHalf {
  __device__ void operator()(__half* p, float v) const { *p = __float2half_rn(v); }
};
struct StoreFloat {
  __device__ void operator()(float* p, float v) const { *p = v; }
};

// At least two blocks per SM: ptxas may then use up to 128 registers, room for the 16 fp32 accumulators and the
// addressing; with the thread bound alone it chose 64 for fp16 on sm_86/89 and spilled.
template <typename T, typename Load, typename Store>
__global__ void __launch_bounds__(kThreads, 2)
    InvolutionKernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ scale,
                     const T* __restrict__ shift, T* __restrict__ y, InvolutionParams p) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < p.total;
       idx += int64_t(gridDim.x) * blockDim.x)
    InvolutionPixel(x, weight, scale, shift, y, p, idx, Load{}, Store{});
}

}  // namespace

std::string LaunchInvolution(ElementType type, const void* x, const void* weight, const void* scale, const void* shift,
                             void* y, const InvolutionAttrs& a, const InvolutionShape& s, cudaStream_t stream) {
  const std::string err = CheckInvolutionAttrs(a);
  if (!err.empty()) return err;
  const InvolutionParams p = MakeInvolutionParams(a, s);
  if (p.total == 0) return {};
  if (x == nullptr || weight == nullptr || scale == nullptr || shift == nullptr || y == nullptr)
    return "involution: null device pointer";
  const int64_t blocks = std::min<int64_t>((p.total + kThreads - 1) / kThreads, int64_t(1) << 24);
  if (type == ElementType::kFloat32) {
    InvolutionKernel<float, LoadFloat, StoreFloat><<<unsigned(blocks), kThreads, 0, stream>>>(
        static_cast<const float*>(x), static_cast<const float*>(weight), static_cast<const float*>(scale),
        static_cast<const float*>(shift), static_cast<float*>(y), p);
  } else {
    InvolutionKernel<__half, LoadHalf, StoreHalf><<<unsigned(blocks), kThreads, 0, stream>>>(
        static_cast<const __half*>(x), static_cast<const __half*>(weight), static_cast<const __half*>(scale),
        static_cast<const __half*>(shift), static_cast<__half*>(y), p);
  }
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string("involution: CUDA launch failed: ") + cudaGetErrorString(status);
}

}  // namespace rednet
