// Memory layouts of the CUDA involution's tensors and the element/vector access its kernels share, written for
// the host AND the device so the host tests run the kernels' phases unchanged (involution_cuda_tiled.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

#include "half.h"
#include "involution_contract.h"

#if defined(__CUDA_ARCH__)  // the device pass only: host compilers do not know the pragma
#define REDNET_UNROLL _Pragma("unroll")
#define REDNET_NO_UNROLL _Pragma("unroll 1")
#else
#define REDNET_UNROLL
#define REDNET_NO_UNROLL
#endif

namespace rednet {

// kNCHW: TensorRT's kLINEAR, ONNX's default. kNHWC: channel-last with a channel pitch >= the channel count (the
// elements between are padding, never read as data, never written): TensorRT's kHWC (fp32, pitch C) and kHWC8
// (fp16, pitch C rounded up to 8: "[N][H][W][(C+7)/8*8]"). x, weight and y share one layout, each its own pitch;
// scale and shift are always plain (C,) arrays.
enum class Layout { kNCHW, kNHWC };

struct TensorLayout {
  Layout order = Layout::kNCHW;
  // channel pitches in elements for kNHWC (0: dense, i.e. C for x and y, G*K*K for weight); ignored for kNCHW
  int64_t x_pitch = 0, weight_pitch = 0, y_pitch = 0;
};

// Element strides of a 4-D tensor (N, C, H, W) in either layout.
struct TensorStrides {
  int64_t n, c, h, w;
};

inline TensorStrides LayoutStrides(Layout order, int64_t c, int64_t h, int64_t w, int64_t pitch) {
  if (order == Layout::kNCHW) return {c * h * w, h * w, w, 1};
  return {h * w * pitch, 1, w * pitch, pitch};
}

// The layout with every channel pitch given (a 0 becomes the dense pitch).
inline TensorLayout ResolvePitches(const TensorLayout& l, const InvolutionAttrs& a, const InvolutionShape& s) {
  const int64_t weight_channels = a.groups * a.kernel_size * a.kernel_size;
  return {l.order, l.x_pitch ? l.x_pitch : s.c, l.weight_pitch ? l.weight_pitch : weight_channels,
          l.y_pitch ? l.y_pitch : s.c};
}

// "" when every channel-last pitch holds its tensor's channels, else a message naming the bad pitch.
inline std::string CheckTensorLayout(const TensorLayout& l, const InvolutionAttrs& a, const InvolutionShape& s) {
  if (l.order == Layout::kNCHW) return {};
  const TensorLayout r = ResolvePitches(l, a, s);
  const int64_t pitches[3] = {r.x_pitch, r.weight_pitch, r.y_pitch};
  const int64_t channels[3] = {s.c, a.groups * a.kernel_size * a.kernel_size, s.c};
  const char* names[3] = {"x", "weight", "y"};
  for (int i = 0; i < 3; ++i)
    if (pitches[i] < channels[i])
      return std::string("involution: channel-last ") + names[i] + " pitch " + std::to_string(pitches[i]) +
             " is smaller than its " + std::to_string(channels[i]) + " channels";
  return {};
}

// Strides of x (N, C, H, W), weight (N, G*K*K, Ho, Wo) and y (N, C, Ho, Wo) in `layout`.
struct InvolutionStrides {
  TensorStrides x, weight, y;
};

inline InvolutionStrides MakeInvolutionStrides(const TensorLayout& layout, const InvolutionAttrs& a,
                                               const InvolutionShape& s) {
  const TensorLayout r = ResolvePitches(layout, a, s);
  return {LayoutStrides(r.order, s.c, s.h, s.w, r.x_pitch),
          LayoutStrides(r.order, a.groups * a.kernel_size * a.kernel_size, s.out_h, s.out_w, r.weight_pitch),
          LayoutStrides(r.order, s.c, s.out_h, s.out_w, r.y_pitch)};
}

// fp32 arithmetic on the storage types: float, __half on the device, IEEE half bits (uint16_t) on the host.
template <typename T>
struct Element;
template <>
struct Element<float> {
  static REDNET_HD float ToFloat(float v) { return v; }
  static REDNET_HD float FromFloat(float v) { return v; }
};
#if defined(__CUDACC__)
template <>
struct Element<__half> {
  static REDNET_HD float ToFloat(__half v) { return __half2float(v); }
  static REDNET_HD __half FromFloat(float v) { return __float2half_rn(v); }
};
#endif
template <>
struct Element<uint16_t> {
  static inline float ToFloat(uint16_t v) { return HalfToFloat(v); }
  static inline uint16_t FromFloat(float v) { return FloatToHalf(v); }
};

// N consecutive elements moved as one access: 16-byte (or narrower) vector loads/stores on the device.
template <typename T, int N>
struct alignas(sizeof(T) * N >= 16 ? 16 : sizeof(T) * N) Vec {
  T v[N];
};

// On the host (the tests) a misaligned vector access is a bug in the kernel's alignment rules, which the device
// would turn into a misaligned-address fault: report it loudly instead of letting memcpy hide it.
REDNET_HD void CheckVectorAlignment(const void* p, size_t alignment) {
#if !defined(__CUDA_ARCH__)
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0) {
    std::fprintf(stderr, "involution kernel emulation: %p is not %zu-byte aligned for a vector access\n", p, alignment);
    std::abort();
  }
#endif
}

template <typename V>
REDNET_HD V LoadVec(const void* p) {
#if defined(__CUDA_ARCH__)
  return *static_cast<const V*>(p);
#else
  CheckVectorAlignment(p, alignof(V));
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}

template <typename V>
REDNET_HD void StoreVec(void* p, const V& v) {
#if defined(__CUDA_ARCH__)
  *static_cast<V*>(p) = v;
#else
  CheckVectorAlignment(p, alignof(V));
  std::memcpy(p, &v, sizeof v);
#endif
}

}  // namespace rednet
