// CUDA involution. One thread per output pixel (n, g, ho, wo) of a group: each kernel tap's weight is loaded once
// (coalesced across wo) and applied to a block of the group's channels held in registers, so the weight tensor,
// the largest operand (G·K² channels vs C/G·G), is read exactly once; x is re-read per tap from L1/L2.
// Accumulation is fp32 for fp16 I/O. Indices are 64-bit; a grid-stride loop covers any size.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "involution_cuda.h"

namespace rednet {
namespace {

constexpr int kThreads = 256;
constexpr int kChannelBlock = 16;  // RedNet's group width: one block covers a whole group

struct Params {
  int64_t total;  // N * G * Ho * Wo
  int64_t c, h, w, out_h, out_w, groups, group_channels;
  int kernel_size, stride, padding, dilation;
};

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T FromFloat(float v);
template <> __device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <> __device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__global__ void __launch_bounds__(kThreads) InvolutionKernel(const T* __restrict__ x, const T* __restrict__ weight,
                                                             T* __restrict__ y, Params p) {
  const int64_t hw_in = p.h * p.w, hw_out = p.out_h * p.out_w;
  const int taps = p.kernel_size * p.kernel_size;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < p.total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t wo = idx % p.out_w;
    int64_t rest = idx / p.out_w;
    const int64_t ho = rest % p.out_h;
    rest /= p.out_h;
    const int64_t g = rest % p.groups, n = rest / p.groups;
    const T* w_pixel = weight + (n * p.groups + g) * taps * hw_out + ho * p.out_w + wo;
    const int64_t c_first = g * p.group_channels;
    for (int64_t c0 = 0; c0 < p.group_channels; c0 += kChannelBlock) {
      const int block = p.group_channels - c0 < kChannelBlock ? int(p.group_channels - c0) : kChannelBlock;
      const T* x_block = x + (n * p.c + c_first + c0) * hw_in;
      float acc[kChannelBlock];
#pragma unroll
      for (int j = 0; j < kChannelBlock; ++j) acc[j] = 0.f;
      for (int kh = 0; kh < p.kernel_size; ++kh) {
        const int64_t hi = ho * p.stride + int64_t(kh) * p.dilation - p.padding;
        if (hi < 0 || hi >= p.h) continue;
        for (int kw = 0; kw < p.kernel_size; ++kw) {
          const int64_t wi = wo * p.stride + int64_t(kw) * p.dilation - p.padding;
          if (wi < 0 || wi >= p.w) continue;
          const float tap = ToFloat(__ldg(w_pixel + int64_t(kh * p.kernel_size + kw) * hw_out));
          const T* x_tap = x_block + hi * p.w + wi;
          if (block == kChannelBlock) {
#pragma unroll
            for (int j = 0; j < kChannelBlock; ++j) acc[j] = fmaf(tap, ToFloat(__ldg(x_tap + j * hw_in)), acc[j]);
          } else {
            for (int j = 0; j < block; ++j) acc[j] = fmaf(tap, ToFloat(__ldg(x_tap + j * hw_in)), acc[j]);
          }
        }
      }
      T* y_pixel = y + ((n * p.c + c_first + c0) * p.out_h + ho) * p.out_w + wo;
      for (int j = 0; j < block; ++j) y_pixel[j * hw_out] = FromFloat<T>(acc[j]);
    }
  }
}

}  // namespace

std::string LaunchInvolution(ElementType type, const void* x, const void* weight, void* y, const InvolutionAttrs& a,
                             const InvolutionShape& s, cudaStream_t stream) {
  const std::string err = CheckInvolutionAttrs(a);
  if (!err.empty()) return err;
  Params p{s.n * a.groups * s.out_h * s.out_w, s.c, s.h, s.w, s.out_h, s.out_w, a.groups, s.c / a.groups,
           int(a.kernel_size), int(a.stride), int(a.padding), int(a.dilation)};
  if (p.total == 0) return {};
  if (x == nullptr || weight == nullptr || y == nullptr) return "involution: null device pointer";
  const int64_t blocks = std::min<int64_t>((p.total + kThreads - 1) / kThreads, int64_t(1) << 24);
  if (type == ElementType::kFloat32) {
    InvolutionKernel<float><<<unsigned(blocks), kThreads, 0, stream>>>(
        static_cast<const float*>(x), static_cast<const float*>(weight), static_cast<float*>(y), p);
  } else {
    InvolutionKernel<__half><<<unsigned(blocks), kThreads, 0, stream>>>(
        static_cast<const __half*>(x), static_cast<const __half*>(weight), static_cast<__half*>(y), p);
  }
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string("involution: CUDA launch failed: ") + cudaGetErrorString(status);
}

}  // namespace rednet
