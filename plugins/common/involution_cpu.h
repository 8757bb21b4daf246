// The CPU involution kernel shared by the ONNX Runtime op and the C++ tests. The work is split into independent
// items (n, group, output row); callers run ranges of items on their own thread pool.
#pragma once

#include <cstdint>

#include "involution_contract.h"

namespace rednet {

inline int64_t InvolutionCpuWorkItems(const InvolutionAttrs& a, const InvolutionShape& s) {
  return s.n * a.groups * s.out_h;
}

// Items [begin, end) of the contract's computation; fp32 accumulation for both types.
// The fp16 variant takes raw IEEE binary16 bits.
void InvolutionCpuF32(const float* x, const float* weight, float* y, const InvolutionAttrs& a,
                      const InvolutionShape& s, int64_t begin, int64_t end);
void InvolutionCpuF16(const uint16_t* x, const uint16_t* weight, uint16_t* y, const InvolutionAttrs& a,
                      const InvolutionShape& s, int64_t begin, int64_t end);

}  // namespace rednet
