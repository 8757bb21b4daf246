// CPU involution: the staged kernel of involution_cpu_isa.inc built for AVX-512 (16 channels per vector), AVX2
// (8) and any CPU (4), picked at run time, so one binary built with default flags runs everywhere; the AVX-512 build
// (and the AVX2 one for fp32) runs 3×3 stride-1 layers on its scratch-free planar path instead. Staging lives
// in a per-thread buffer that only grows; where the staged layout would need more than a multiple of the data an
// item reads (strides, paddings or dilations far beyond the tensors, as only a hostile model has) the items run on
// the scratch-free per-pixel body instead, so scratch stays bounded by the tensors.
#include "involution_cpu.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "half.h"
#include "involution_cuda_pixel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define REDNET_CPU_X86_BUILDS 1
#include <immintrin.h>
#else
#define REDNET_CPU_X86_BUILDS 0
#endif

namespace rednet {
namespace {

// Staging allowed per thread beyond a multiple of the data an item reads: covers every real network's shapes.
constexpr int64_t kStagingSlack = int64_t{1} << 16;  // floats (256 KB)
constexpr int64_t kStagingPerItemData = 4;

// The calling thread's staging, at least `floats` long, 64-byte aligned.
float* Scratch(int64_t floats) {
  constexpr size_t kAlign = 64 / sizeof(float);
  thread_local std::vector<float> staging;
  if (staging.size() < static_cast<size_t>(floats) + kAlign) staging.resize(floats + kAlign);
  void* p = staging.data();
  size_t space = staging.size() * sizeof(float);
  return static_cast<float*>(std::align(64, floats * sizeof(float), p, space));
}

inline float ToFloat(float v) { return v; }
inline float ToFloat(uint16_t v) { return HalfToFloat(v); }
inline void FromFloat(float* dst, float v) { *dst = v; }
inline void FromFloat(uint16_t* dst, float v) { *dst = FloatToHalf(v); }

// Items [begin, end) one output pixel at a time (the CUDA kernel's body): no scratch, taps outside the input
// skipped, so memory and work follow the tensors whatever the attributes.
template <typename T>
void PixelItems(const T* x, const T* weight, const T* scale, const T* shift, T* y, const InvolutionAttrs& a,
                const InvolutionShape& s, int64_t begin, int64_t end) {
  const InvolutionParams p = MakeInvolutionParams(a, s);
  const int64_t band_rows = InvolutionCpuBandRows(s), bands = (s.out_h + band_rows - 1) / band_rows;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t ng = item / bands, ho0 = item % bands * band_rows;
    for (int64_t ho = ho0; ho < std::min(ho0 + band_rows, s.out_h); ++ho)
      for (int64_t wo = 0; wo < s.out_w; ++wo)
        InvolutionPixel(x, weight, scale, shift, y, p, (ng * s.out_h + ho) * s.out_w + wo,
                        [](const T* v) { return ToFloat(*v); }, [](T* dst, float v) { FromFloat(dst, v); });
  }
}

#if REDNET_CPU_X86_BUILDS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
namespace avx512 {
constexpr int64_t kLanes = 16;
#define REDNET_CPU_AVX512 1
#define REDNET_CPU_F16C 1
#include "involution_cpu_isa.inc"
#undef REDNET_CPU_AVX512
#undef REDNET_CPU_F16C
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
namespace avx2 {
constexpr int64_t kLanes = 8;
#define REDNET_CPU_AVX512 0
#define REDNET_CPU_F16C 1
#include "involution_cpu_isa.inc"
#undef REDNET_CPU_AVX512
#undef REDNET_CPU_F16C
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace generic {
constexpr int64_t kLanes = 4;
#define REDNET_CPU_AVX512 0
#define REDNET_CPU_F16C 0
#include "involution_cpu_isa.inc"
#undef REDNET_CPU_AVX512
#undef REDNET_CPU_F16C
}  // namespace generic

CpuIsa BestIsa() {
#if REDNET_CPU_X86_BUILDS
  static const CpuIsa best = __builtin_cpu_supports("x86-64-v4")   ? CpuIsa::kAvx512
                             : __builtin_cpu_supports("x86-64-v3") ? CpuIsa::kAvx2
                                                                   : CpuIsa::kGeneric;
  return best;
#else
  return CpuIsa::kGeneric;
#endif
}

template <typename T>
void Involution(const T* x, const T* weight, const T* scale, const T* shift, T* y, const InvolutionAttrs& a,
                const InvolutionShape& s, int64_t begin, int64_t end, CpuIsa isa) {
  if (isa == CpuIsa::kBest) isa = BestIsa();
  // the data one item reads and writes: its input rows, weight rows and output rows
  const int64_t band_rows = InvolutionCpuBandRows(s), cg = s.c / a.groups;
  const int64_t span = std::min((band_rows - 1) * a.stride + (a.kernel_size - 1) * a.dilation + 1, s.h);
  const int64_t item_data = cg * span * s.w + (a.kernel_size * a.kernel_size + cg) * band_rows * s.out_w;
  const int64_t max_floats = kStagingSlack + kStagingPerItemData * item_data;
  bool done = false;
  switch (isa) {
#if REDNET_CPU_X86_BUILDS
    case CpuIsa::kAvx512:
      done = avx512::Run(x, weight, scale, shift, y, a, s, begin, end, max_floats);
      break;
    case CpuIsa::kAvx2:
      done = avx2::Run(x, weight, scale, shift, y, a, s, begin, end, max_floats);
      break;
#endif
    default:
      done = generic::Run(x, weight, scale, shift, y, a, s, begin, end, max_floats);
  }
  if (!done) PixelItems(x, weight, scale, shift, y, a, s, begin, end);
}

}  // namespace

bool InvolutionCpuSupports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBest:
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
      return BestIsa() == CpuIsa::kAvx2 || BestIsa() == CpuIsa::kAvx512;
    case CpuIsa::kAvx512:
      return BestIsa() == CpuIsa::kAvx512;
  }
  return false;
}

void InvolutionCpuF32(const float* x, const float* weight, const float* scale, const float* shift, float* y,
                      const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end, CpuIsa isa) {
  Involution(x, weight, scale, shift, y, a, s, begin, end, isa);
}

void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, const uint16_t* scale, const uint16_t* shift,
                      uint16_t* y, const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end,
                      CpuIsa isa) {
  Involution(x, weight, scale, shift, y, a, s, begin, end, isa);
}

}  // namespace rednet
