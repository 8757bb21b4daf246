// Direct double-precision evaluation of the involution contract, the oracle of the C++ tests, and the rounding-error
// bound a computed result must stay within (the same derivation as tests/helpers.py).
#pragma once

#include <cmath>
#include <vector>

#include "involution_contract.h"

namespace rednet::testing {

// value: the contract's output; magnitude: |scale|·Σ|w|·|x| + |shift| over the same taps (what the rounding bound
// scales with).
struct Reference {
  std::vector<double> value, magnitude;
};

// The epilogue's scale·acc + shift rounds twice more (once with an FMA): bounded like two more terms of the sum,
// since |scale·acc| + |shift| is within `magnitude`. Error bounds take `taps + kEpilogueTerms` terms.
inline constexpr int64_t kEpilogueTerms = 2;

// scale/shift: C values each, or empty for none (ones/zeros).
inline Reference EvaluateReference(const std::vector<float>& x, const std::vector<float>& w,
                                   const std::vector<float>& scale, const std::vector<float>& shift,
                                   const InvolutionAttrs& a, const InvolutionShape& s) {
  const int64_t K = a.kernel_size, cg = s.c / a.groups;
  Reference r{std::vector<double>(s.n * s.c * s.out_h * s.out_w, 0.0), {}};
  r.magnitude = r.value;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t ho = 0; ho < s.out_h; ++ho)
        for (int64_t wo = 0; wo < s.out_w; ++wo) {
          double sum = 0, magnitude = 0;
          for (int64_t kh = 0; kh < K; ++kh)
            for (int64_t kw = 0; kw < K; ++kw) {
              const int64_t hi = ho * a.stride + kh * a.dilation - a.padding;
              const int64_t wi = wo * a.stride + kw * a.dilation - a.padding;
              if (hi < 0 || hi >= s.h || wi < 0 || wi >= s.w) continue;
              const int64_t g = c / cg;
              const double term =
                  double(w[((n * a.groups + g) * K * K + kh * K + kw) * s.out_h * s.out_w + ho * s.out_w + wo]) *
                  x[((n * s.c + c) * s.h + hi) * s.w + wi];
              sum += term;
              magnitude += std::abs(term);
            }
          const int64_t i = ((n * s.c + c) * s.out_h + ho) * s.out_w + wo;
          const double sc = scale.empty() ? 1.0 : scale[c], sh = shift.empty() ? 0.0 : shift[c];
          const double pre = sc * sum + sh;
          r.value[i] = a.activation == kActivationRelu && pre < 0 ? 0.0 : pre;
          r.magnitude[i] = std::abs(sc) * magnitude + std::abs(sh);
        }
  return r;
}

inline std::vector<double> ReferenceInvolution(const std::vector<float>& x, const std::vector<float>& w,
                                               const std::vector<float>& scale, const std::vector<float>& shift,
                                               const InvolutionAttrs& a, const InvolutionShape& s) {
  return EvaluateReference(x, w, scale, shift, a, s).value;
}

// Round-to-nearest unit roundoff u = 2^-p (p significand bits) and half the smallest subnormal, the largest
// rounding error below the normal range.
struct Precision {
  double unit_roundoff, half_smallest_subnormal;
};
inline constexpr Precision kFloat16{0x1p-11, 0x1p-25};
inline constexpr Precision kFloat32{0x1p-24, 0x1p-150};
inline constexpr Precision kFloat64{0x1p-53, 0.0};

// γ_m = m·u / (1 − m·u)
inline double Gamma(int64_t m, Precision p) { return m * p.unit_roundoff / (1 - m * p.unit_roundoff); }

// Elementwise bound on |computed − value[i]|: an inner product of at most K² terms accumulated with unit roundoff
// u (any order, with or without FMA) errs by at most γ_{K²}·Σ|w|·|x| (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., eq. 3.5), the fp64 oracle by γ_{K²}(fp64) of the same; rounding once more to a narrower
// output type (`output`, null when the accumulator is the output) adds u_out·|ŷ| + half its smallest subnormal.
inline double ErrorBound(const Reference& r, size_t i, int64_t taps, Precision accumulation, const Precision* output) {
  double bound = (Gamma(taps, accumulation) + Gamma(taps, kFloat64)) * r.magnitude[i];
  if (output != nullptr)
    bound += output->unit_roundoff * (std::abs(r.value[i]) + bound) + output->half_smallest_subnormal;
  return bound;
}

// The largest |y[i] − value[i]| / bound over all elements: ≤ 1 passes (an exact zero where every tap is padding
// has a zero bound).
template <typename Get>
double WorstExcess(Get y, const Reference& r, int64_t taps, Precision accumulation, const Precision* output) {
  double worst = 0;
  for (size_t i = 0; i < r.value.size(); ++i) {
    const double error = std::abs(y(i) - r.value[i]);
    if (error == 0) continue;
    const double excess = error / ErrorBound(r, i, taps, accumulation, output);
    if (!(excess <= worst)) worst = excess;  // a NaN (an element never written) sticks and fails the check
  }
  return worst;
}

}  // namespace rednet::testing
