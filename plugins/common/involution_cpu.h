// The CPU involution kernel shared by the ONNX Runtime op and the C++ tests. The work is split into independent
// items (n, group, tile of kRowsPerItem output rows); callers run ranges of items on their own thread pool.
#pragma once

#include <cstdint>

#include "involution_contract.h"

namespace rednet {

// Output rows per work item: their input rows are staged once and shared (K·stride overlap between rows).
inline constexpr int64_t kRowsPerItem = 4;

inline int64_t InvolutionCpuRowTiles(const InvolutionShape& s) { return (s.out_h + kRowsPerItem - 1) / kRowsPerItem; }

inline int64_t InvolutionCpuWorkItems(const InvolutionAttrs& a, const InvolutionShape& s) {
  return s.n * a.groups * InvolutionCpuRowTiles(s);
}

// Items [begin, end) of the contract's computation, epilogue included (scale/shift: C values each, never null);
// fp32 accumulation for both types. The fp16 variant takes raw IEEE binary16 bits.
void InvolutionCpuF32(const float* x, const float* weight, const float* scale, const float* shift, float* y,
                      const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end);
void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, const uint16_t* scale, const uint16_t* shift,
                      uint16_t* y, const InvolutionAttrs& a, const InvolutionShape& s, int64_t begin, int64_t end);

}  // namespace rednet
