// Direct double-precision evaluation of the involution contract, the oracle of the C++ tests.
#pragma once

#include <vector>

#include "involution_contract.h"

namespace rednet::testing {

inline std::vector<double> ReferenceInvolution(const std::vector<float>& x, const std::vector<float>& w,
                                               const InvolutionAttrs& a, const InvolutionShape& s) {
  const int64_t K = a.kernel_size, cg = s.c / a.groups;
  std::vector<double> y(s.n * s.c * s.out_h * s.out_w, 0.0);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t ho = 0; ho < s.out_h; ++ho)
        for (int64_t wo = 0; wo < s.out_w; ++wo) {
          double sum = 0;
          for (int64_t kh = 0; kh < K; ++kh)
            for (int64_t kw = 0; kw < K; ++kw) {
              const int64_t hi = ho * a.stride + kh * a.dilation - a.padding;
              const int64_t wi = wo * a.stride + kw * a.dilation - a.padding;
              if (hi < 0 || hi >= s.h || wi < 0 || wi >= s.w) continue;
              const int64_t g = c / cg;
              sum += double(w[((n * a.groups + g) * K * K + kh * K + kw) * s.out_h * s.out_w + ho * s.out_w + wo]) *
                     x[((n * s.c + c) * s.h + hi) * s.w + wi];
            }
          y[((n * s.c + c) * s.out_h + ho) * s.out_w + wo] = sum;
        }
  return y;
}

}  // namespace rednet::testing
