// CPU involution: per work item (n, g, ho), output columns are processed in tiles held in a stack accumulator
// for a block of channels of the group. Each kernel tap's weight row is loaded once per tile and reused by
// every channel of the group (the involution kernel is shared across the group's C/G channels); the inner loop
// runs over contiguous output columns so the compiler vectorises it. No heap allocation except a per-thread
// fp16 row buffer that only ever grows.
#include "involution_cpu.h"

#include <algorithm>
#include <vector>

#include "half.h"

namespace rednet {
namespace {

constexpr int64_t kTileW = 128;  // output columns per tile
constexpr int64_t kBlockC = 16;  // channels accumulated together (one RedNet group)
constexpr int64_t kChunkK = 8;   // kernel columns whose weight rows are staged at once

inline float Load(float v) { return v; }
inline float Load(uint16_t v) { return HalfToFloat(v); }
inline void Store(float* dst, float v) { *dst = v; }
inline void Store(uint16_t* dst, float v) { *dst = FloatToHalf(v); }

// x row as float: fp32 rows are used in place; fp16 rows are converted once per (channel, kernel row).
struct RowView {
  const float* data;
  int64_t first;  // column index of data[0]
};

inline RowView View(const float* row, int64_t, int64_t) { return {row, 0}; }

inline RowView View(const uint16_t* row, int64_t first, int64_t last) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < last - first) buffer.resize(last - first);
  for (int64_t i = first; i < last; ++i) buffer[i - first] = HalfToFloat(row[i]);
  return {buffer.data(), first};
}

template <typename T>
__attribute__((always_inline)) inline void Rows(const T* x, const T* weight, T* y, const InvolutionAttrs& a,
                                                const InvolutionShape& s, int64_t begin, int64_t end) {
  const int64_t K = a.kernel_size, G = a.groups, Cg = s.c / G, stride = a.stride, dil = a.dilation;
  const int64_t hw_out = s.out_h * s.out_w, hw_in = s.h * s.w;
  float acc[kBlockC][kTileW];
  float taps[kChunkK][kTileW];
  for (int64_t item = begin; item < end; ++item) {
    const int64_t ho = item % s.out_h, ng = item / s.out_h, g = ng % G, n = ng / G;
    const T* w_item = weight + (n * G + g) * K * K * hw_out + ho * s.out_w;
    for (int64_t w0 = 0; w0 < s.out_w; w0 += kTileW) {
      const int64_t tile = std::min(kTileW, s.out_w - w0);
      // input columns this tile can read
      const int64_t col_first = std::max<int64_t>(0, w0 * stride - a.padding);
      const int64_t col_last = std::min(s.w, (w0 + tile - 1) * stride + (K - 1) * dil - a.padding + 1);
      for (int64_t c0 = 0; c0 < Cg; c0 += kBlockC) {
        const int64_t block = std::min(kBlockC, Cg - c0);
        for (int64_t cb = 0; cb < block; ++cb) std::fill(acc[cb], acc[cb] + tile, 0.0f);
        for (int64_t kh = 0; kh < K; ++kh) {
          const int64_t hi = ho * stride + kh * dil - a.padding;
          if (hi < 0 || hi >= s.h || col_first >= col_last) continue;
          for (int64_t kw0 = 0; kw0 < K; kw0 += kChunkK) {
            const int64_t chunk = std::min(kChunkK, K - kw0);
            for (int64_t j = 0; j < chunk; ++j) {
              const T* src = w_item + (kh * K + kw0 + j) * hw_out + w0;
              for (int64_t t = 0; t < tile; ++t) taps[j][t] = Load(src[t]);
            }
            for (int64_t cb = 0; cb < block; ++cb) {
              const int64_t c = g * Cg + c0 + cb;
              const RowView row = View(x + (n * s.c + c) * hw_in + hi * s.w, col_first, col_last);
              float* out = acc[cb];
              for (int64_t j = 0; j < chunk; ++j) {
                const int64_t offset = (kw0 + j) * dil - a.padding;  // input column = (w0 + t) * stride + offset
                const int64_t lo_num = -offset - w0 * stride, hi_num = s.w - 1 - offset - w0 * stride;
                if (hi_num < 0) continue;
                const int64_t t_lo = lo_num <= 0 ? 0 : (lo_num + stride - 1) / stride;
                const int64_t t_hi = std::min(tile, hi_num / stride + 1);
                if (t_lo >= t_hi) continue;
                const int64_t count = t_hi - t_lo;
                const float* tap = taps[j] + t_lo;
                const float* in = row.data + ((w0 + t_lo) * stride + offset - row.first);
                float* o = out + t_lo;
                if (stride == 1) {
                  for (int64_t t = 0; t < count; ++t) o[t] += tap[t] * in[t];
                } else {
                  for (int64_t t = 0; t < count; ++t) o[t] += tap[t] * in[t * stride];
                }
              }
            }
          }
        }
        for (int64_t cb = 0; cb < block; ++cb) {
          T* dst = y + ((n * s.c + g * Cg + c0 + cb) * s.out_h + ho) * s.out_w + w0;
          for (int64_t t = 0; t < tile; ++t) Store(dst + t, acc[cb][t]);
        }
      }
    }
  }
}

}  // namespace

// One binary serves every x86-64 CPU; the AVX2/FMA clone is picked at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define REDNET_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define REDNET_CPU_CLONES
#endif

REDNET_CPU_CLONES void InvolutionCpuF32(const float* x, const float* weight, float* y, const InvolutionAttrs& a,
                                        const InvolutionShape& s, int64_t begin, int64_t end) {
  Rows(x, weight, y, a, s, begin, end);
}

REDNET_CPU_CLONES void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, uint16_t* y,
                                        const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin,
                                        int64_t end) {
  Rows(x, weight, y, a, s, begin, end);
}

}  // namespace rednet
