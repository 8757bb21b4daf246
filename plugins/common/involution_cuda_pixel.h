// The per-pixel body of the CUDA involution kernel (the launcher's generic fallback, any attributes, either layout
// through strides), compiled for the device by involution_cuda.cu and for the host by the CPU kernel and the C++
// tests, so its indexing is checked against the reference on machines without a GPU.
#pragma once

#include <cstdint>

#include "involution_contract.h"
#include "involution_cuda_layout.h"

namespace rednet {

constexpr int kChannelBlock = 16;  // RedNet's group width: one block covers a whole group

struct InvolutionParams {
  int64_t total;  // N * G * Ho * Wo output pixels
  int64_t h, w, out_h, out_w, groups, group_channels;
  int kernel_size, stride, padding, dilation;
  int activation;
  InvolutionStrides strides;  // of x, weight, y in their layout
};

inline InvolutionParams MakeInvolutionParams(const InvolutionAttrs& a, const InvolutionShape& s,
                                             const TensorLayout& layout = {}) {
  return InvolutionParams{s.n * a.groups * s.out_h * s.out_w, s.h, s.w, s.out_h, s.out_w, a.groups,
                          s.c / a.groups, int(a.kernel_size), int(a.stride), int(a.padding), int(a.dilation),
                          int(a.activation), MakeInvolutionStrides(layout, a, s)};
}

// Output pixel `idx` (n, g, ho, wo) for every channel of group g. Each kernel tap's weight is read once and
// applied to a block of the group's channels held in registers. `load(ptr)` reads one element as float,
// `store(ptr, v)` writes one.
template <typename T, typename Load, typename Store>
REDNET_HD void InvolutionPixel(const T* x, const T* weight, const T* scale, const T* shift, T* y,
                               const InvolutionParams& p, int64_t idx, Load load, Store store) {
  const TensorStrides &xs = p.strides.x, &ws = p.strides.weight, &ys = p.strides.y;
  const int taps = p.kernel_size * p.kernel_size;
  const int64_t wo = idx % p.out_w;
  int64_t rest = idx / p.out_w;
  const int64_t ho = rest % p.out_h;
  rest /= p.out_h;
  const int64_t g = rest % p.groups, n = rest / p.groups;
  const T* w_pixel = weight + n * ws.n + g * taps * ws.c + ho * ws.h + wo * ws.w;
  const int64_t c_first = g * p.group_channels;
  for (int64_t c0 = 0; c0 < p.group_channels; c0 += kChannelBlock) {
    const int block = p.group_channels - c0 < kChannelBlock ? int(p.group_channels - c0) : kChannelBlock;
    const T* x_block = x + n * xs.n + (c_first + c0) * xs.c;
    // Every loop over acc is fully unrolled with a compile-time index (a partial block is guarded, not bounded),
    // so acc stays in registers: a runtime index would put it in local memory (tests/test_cuda_resource_usage.py).
    float acc[kChannelBlock];
    REDNET_UNROLL
    for (int j = 0; j < kChannelBlock; ++j) acc[j] = 0.f;
    for (int kh = 0; kh < p.kernel_size; ++kh) {
      const int64_t hi = ho * p.stride + int64_t(kh) * p.dilation - p.padding;
      if (hi < 0 || hi >= p.h) continue;
      for (int kw = 0; kw < p.kernel_size; ++kw) {
        const int64_t wi = wo * p.stride + int64_t(kw) * p.dilation - p.padding;
        if (wi < 0 || wi >= p.w) continue;
        const float tap = load(w_pixel + int64_t(kh * p.kernel_size + kw) * ws.c);
        const T* x_tap = x_block + hi * xs.h + wi * xs.w;
        REDNET_UNROLL
        for (int j = 0; j < kChannelBlock; ++j)
          if (j < block) acc[j] += tap * load(x_tap + j * xs.c);
      }
    }
    T* y_pixel = y + n * ys.n + (c_first + c0) * ys.c + ho * ys.h + wo * ys.w;
    REDNET_UNROLL
    for (int j = 0; j < kChannelBlock; ++j)
      if (j < block) {
        const int64_t c = c_first + c0 + j;
        store(y_pixel + j * ys.c, ApplyEpilogue(acc[j], load(scale + c), load(shift + c), p.activation));
      }
  }
}

}  // namespace rednet
