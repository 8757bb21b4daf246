// CPU involution. Per work item (n, g, a tile of output rows): for each block of 8 channels of the group the
// input rows the tile reads are staged once, zero-padded and split into `stride` phases, so every kernel tap reads a contiguous, in-bounds span
// whatever the stride, padding or dilation. The inner loop keeps 8 channels × 8 columns of accumulators in
// vector registers and does one multiply-add per tap and channel, each tap's weight vector loaded once and
// shared by the block (the involution kernel is shared across the group's channels). fp32 weight rows are read
// in place; fp16 (and the ragged tail) are staged as fp32. Staging lives in a per-thread buffer that only grows.
// The staged layout pads rows to whole vectors and all `stride` phases, which costs ~stride² per row whatever the
// tensor sizes: where that exceeds what the item reads (strides or dilations far beyond the tensors, as only a
// hostile model has) the item runs on the scratch-free per-pixel body instead, so scratch stays bounded by the
// tensors.
#include "involution_cpu.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "half.h"
#include "involution_cuda_pixel.h"

namespace rednet {
namespace {

constexpr int64_t kVec = 8;     // output columns per vector
constexpr int64_t kBlockC = 8;  // channels per register block
// Staging allowed per thread beyond a multiple of the data an item reads: covers every real network's shapes.
constexpr int64_t kStagingSlack = int64_t{1} << 16;  // floats (256 KB)
constexpr int64_t kStagingPerItemData = 4;
typedef float Vec __attribute__((vector_size(kVec * sizeof(float))));

inline Vec LoadVec(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float Load(float v) { return v; }
inline float Load(uint16_t v) { return HalfToFloat(v); }
inline void Store(float* dst, float v) { *dst = v; }
inline void Store(uint16_t* dst, float v) { *dst = FloatToHalf(v); }

// Items [begin, end) one output pixel at a time (the CUDA kernel's body): no scratch, taps outside the input
// skipped, so memory and work follow the tensors whatever the attributes. Kept out of line: the staged path's
// code stays as compiled before.
template <typename T>
__attribute__((noinline)) void PixelItems(const T* x, const T* weight, const T* scale, const T* shift, T* y,
                                          const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin,
                                          int64_t end) {
  const InvolutionParams p = MakeInvolutionParams(a, s);
  const int64_t tiles = InvolutionCpuRowTiles(s);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t ng = item / tiles, ho0 = item % tiles * kRowsPerItem;
    for (int64_t ho = ho0; ho < std::min(ho0 + kRowsPerItem, s.out_h); ++ho)
      for (int64_t wo = 0; wo < s.out_w; ++wo)
        InvolutionPixel(x, weight, scale, shift, y, p, (ng * s.out_h + ho) * s.out_w + wo,
                        [](const T* v) { return Load(*v); }, [](T* dst, float v) { Store(dst, v); });
  }
}

template <typename T>
__attribute__((always_inline)) inline void Rows(const T* x, const T* weight, const T* scale, const T* shift, T* y,
                                                const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin,
                                                int64_t end) {
  const int64_t K = a.kernel_size, G = a.groups, Cg = s.c / G, stride = a.stride, dil = a.dilation;
  const int64_t hw_out = s.out_h * s.out_w, hw_in = s.h * s.w;
  const int64_t out_w_pad = (s.out_w + kVec - 1) / kVec * kVec;
  const int64_t phase_len = out_w_pad + (K - 1) * dil / stride + 1;  // staged entries per phase
  const int64_t row_len = stride * phase_len;                         // one staged input row, all phases
  const int64_t tiles = InvolutionCpuRowTiles(s);
  const int64_t span = (kRowsPerItem - 1) * stride + (K - 1) * dil + 1;  // input rows one item reads
  // Columns [0, direct_end) of fp32 weight rows are loaded straight from the tensor.
  const int64_t direct_end = std::is_same_v<T, float> ? s.out_w / kVec * kVec : 0;
  const int64_t need = kRowsPerItem * K * K * out_w_pad + span * kBlockC * row_len;
  const int64_t item_data = kRowsPerItem * K * K * s.out_w + kBlockC * std::min(span, s.h) * s.w;
  if (need > kStagingSlack + kStagingPerItemData * item_data) return PixelItems(x, weight, scale, shift, y, a, s, begin, end);
  thread_local std::vector<float> staging;
  if (staging.size() < static_cast<size_t>(need)) staging.resize(need);
  float* taps = staging.data();                           // [kRowsPerItem][K*K][out_w_pad]
  float* rows = taps + kRowsPerItem * K * K * out_w_pad;  // [span][kBlockC][stride][phase_len]
  // Tap kw reads padded column stride * (t + q) + r with q, r = divmod(kw * dilation, stride): phase r, entry t + q.
  int64_t tap_offset[kMaxKernelSize];
  for (int64_t kw = 0; kw < K; ++kw) tap_offset[kw] = (kw * dil % stride) * phase_len + kw * dil / stride;

  for (int64_t item = begin; item < end; ++item) {
    const int64_t tile = item % tiles, ng = item / tiles, g = ng % G, n = ng / G;
    const int64_t ho0 = tile * kRowsPerItem, rows_here = std::min(kRowsPerItem, s.out_h - ho0);
    const int64_t hi0 = ho0 * stride - a.padding;  // input row of staged row 0
    const T* w_group = weight + (n * G + g) * K * K * hw_out;
    for (int64_t r = 0; r < rows_here; ++r)
      for (int64_t k = 0; k < K * K; ++k) {
        float* dst = taps + (r * K * K + k) * out_w_pad;
        const T* src = w_group + k * hw_out + (ho0 + r) * s.out_w;
        for (int64_t t = direct_end; t < s.out_w; ++t) dst[t] = Load(src[t]);
        std::fill(dst + s.out_w, dst + out_w_pad, 0.0f);
      }
    for (int64_t c0 = 0; c0 < Cg; c0 += kBlockC) {
      const int64_t block = std::min(kBlockC, Cg - c0);
      const T* x_block = x + (n * s.c + g * Cg + c0) * hw_in;
      // Stage every input row the item reads once, shared by its output rows.
      for (int64_t j = 0; j < span; ++j) {
        const int64_t hi = hi0 + j;
        if (hi < 0 || hi >= s.h) continue;
        for (int64_t cb = 0; cb < kBlockC; ++cb) {
          float* dst = rows + (j * kBlockC + cb) * row_len;
          if (cb >= block) {  // channels past the group's end: zeros, never stored
            std::fill(dst, dst + row_len, 0.0f);
            continue;
          }
          const T* src = x_block + cb * hw_in + hi * s.w;
          for (int64_t ph = 0; ph < stride; ++ph) {
            // entry e holds input column e * stride + ph - padding; zero outside [0, W)
            float* phase = dst + ph * phase_len;
            const int64_t first = ph - a.padding;
            const int64_t e_lo = std::min(phase_len, first >= 0 ? 0 : (-first + stride - 1) / stride);
            const int64_t e_hi =
                std::max(e_lo, std::min(phase_len, s.w - 1 - first < 0 ? 0 : (s.w - 1 - first) / stride + 1));
            std::fill(phase, phase + e_lo, 0.0f);
            if constexpr (std::is_same_v<T, float>) {
              if (stride == 1) {
                std::memcpy(phase + e_lo, src + e_lo + first, (e_hi - e_lo) * sizeof(float));
              } else {
                for (int64_t e = e_lo; e < e_hi; ++e) phase[e] = src[e * stride + first];
              }
            } else {
              for (int64_t e = e_lo; e < e_hi; ++e) phase[e] = Load(src[e * stride + first]);
            }
            std::fill(phase + e_hi, phase + phase_len, 0.0f);
          }
        }
      }
      for (int64_t r = 0; r < rows_here; ++r) {
        const int64_t ho = ho0 + r;
        const T* w_row = w_group + ho * s.out_w;
        for (int64_t t0 = 0; t0 < out_w_pad; t0 += kVec) {
          Vec acc[kBlockC] = {};
          for (int64_t kh = 0; kh < K; ++kh) {
            const int64_t j = r * stride + kh * dil;
            if (hi0 + j < 0 || hi0 + j >= s.h) continue;
            const float* rows_kh = rows + j * kBlockC * row_len + t0;
            for (int64_t kw = 0; kw < K; ++kw) {
              const int64_t k = kh * K + kw;
              const Vec tap = t0 < direct_end ? LoadVec(reinterpret_cast<const float*>(w_row + k * hw_out) + t0)
                                              : LoadVec(taps + (r * K * K + k) * out_w_pad + t0);
              const float* in = rows_kh + tap_offset[kw];
#pragma GCC unroll 8
              for (int64_t cb = 0; cb < kBlockC; ++cb) acc[cb] += tap * LoadVec(in + cb * row_len);
            }
          }
          const int64_t count = std::min(kVec, s.out_w - t0);
          for (int64_t cb = 0; cb < block; ++cb) {
            const int64_t c = g * Cg + c0 + cb;
            T* dst = y + ((n * s.c + c) * s.out_h + ho) * s.out_w + t0;
            const float scale_c = Load(scale[c]), shift_c = Load(shift[c]);
            float lanes[kVec];
            std::memcpy(lanes, &acc[cb], sizeof lanes);
            for (int64_t t = 0; t < count; ++t) Store(dst + t, ApplyEpilogue(lanes[t], scale_c, shift_c, a.activation));
          }
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

REDNET_CPU_CLONES void InvolutionCpuF32(const float* x, const float* weight, const float* scale, const float* shift,
                                        float* y, const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin,
                                        int64_t end) {
  Rows(x, weight, scale, shift, y, a, s, begin, end);
}

REDNET_CPU_CLONES void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, const uint16_t* scale,
                                        const uint16_t* shift, uint16_t* y, const InvolutionAttrs& a,
                                        const InvolutionShape& s, int64_t begin, int64_t end) {
  Rows(x, weight, scale, shift, y, a, s, begin, end);
}

}  // namespace rednet
