// The CPU involution kernel shared by the ONNX Runtime op, the PyTorch op and the C++ tests. The work is split into
// independent items (n, group, band of output rows); callers run ranges of items on their own thread pool.
#pragma once

#include <cstdint>

#include "involution_contract.h"

namespace rednet {

// Output rows per item: the input rows a band reads are staged once per item, so taller bands waste less staging
// (K - stride rows of overlap per band) while more bands keep a thread pool busy at batch 1. Bands of at most 32
// rows give RedNet-50 (112×112 … 7×7, 2 … 32 groups) at least 8 items per image.
inline int64_t InvolutionCpuBandRows(const InvolutionShape& s) {
  const int64_t bands = (s.out_h + 31) / 32;
  return (s.out_h + bands - 1) / bands;
}

inline int64_t InvolutionCpuWorkItems(const InvolutionAttrs& a, const InvolutionShape& s) {
  const int64_t band_rows = InvolutionCpuBandRows(s);
  return s.n * a.groups * ((s.out_h + band_rows - 1) / band_rows);
}

// The instruction sets the kernel has a build for; kBest is the widest this CPU runs.
enum class CpuIsa { kBest, kGeneric, kAvx2, kAvx512 };
bool InvolutionCpuSupports(CpuIsa isa);

// Items [begin, end) of the contract's computation, epilogue included (scale/shift: C values each, never null);
// fp32 accumulation for both types. The fp16 variant takes raw IEEE binary16 bits. `isa` other than kBest (tests)
// must be supported.
void InvolutionCpuF32(const float* x, const float* weight, const float* scale, const float* shift, float* y,
                      const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end,
                      CpuIsa isa = CpuIsa::kBest);
void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, const uint16_t* scale, const uint16_t* shift,
                      uint16_t* y, const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end,
                      CpuIsa isa = CpuIsa::kBest);

}  // namespace rednet
