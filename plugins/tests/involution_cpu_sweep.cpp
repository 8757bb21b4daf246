// The CPU kernel, and the CUDA kernel's per-pixel body built for the host, against a direct double-precision
// evaluation of the contract over an attribute sweep (incl. rows wider than several vectors, groups wider than
// one channel block, ragged row tiles), plus every contract rejection. Exit code 0 only when all pass; built
// with sanitizers by `make asan-test`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "half.h"
#include "involution_contract.h"
#include "involution_cpu.h"
#include "expect.h"
#include "involution_cuda_pixel.h"
#include "reference.h"

using rednet::InvolutionAttrs;
using rednet::InvolutionShape;

using rednet::testing::Expect;
using rednet::testing::failures;

namespace {

std::string CheckShapes(const InvolutionAttrs& a, const int64_t* x, size_t x_rank, const int64_t* w, size_t w_rank,
                        InvolutionShape* s) {
  const int64_t c[1] = {x_rank > 1 ? x[1] : 0};
  const int64_t* dims[rednet::kNumInputs] = {x, w, c, c};
  const size_t ranks[rednet::kNumInputs] = {x_rank, w_rank, 1, 1};
  return rednet::CheckInvolutionShapes(a, dims, ranks, s);
}

// Every build of the kernel this CPU runs (kBest is one of them).
constexpr std::pair<rednet::CpuIsa, const char*> kIsas[] = {
    {rednet::CpuIsa::kGeneric, "generic"}, {rednet::CpuIsa::kAvx2, "avx2"}, {rednet::CpuIsa::kAvx512, "avx512"}};

// Runs items [0, count) as a thread pool would: ranges of one, then two, then three items ... (so a thread's staging
// serves items of different bands and groups in turn).
template <typename Fn>
void RunInPieces(int64_t count, Fn fn) {
  for (int64_t begin = 0, size = 1; begin < count; begin += size, ++size) fn(begin, std::min(count, begin + size));
}

// Alternate cases fuse a BatchNorm-like epilogue (scale around 1 of both signs, a shift, ReLU), the others run
// with the identity epilogue (ones, zeros, no activation).
void RunCase(int64_t n, int64_t c, int64_t h, int64_t w, InvolutionAttrs a, std::mt19937& rng) {
  static int case_index = 0;
  const bool fused = case_index++ % 2 == 1;
  a.activation = fused ? rednet::kActivationRelu : rednet::kActivationNone;
  const int64_t x_dims[4] = {n, c, h, w};
  const int64_t ho = rednet::InvolutionOutputSize(h, a), wo = rednet::InvolutionOutputSize(w, a);
  const int64_t w_dims[4] = {n, a.groups * a.kernel_size * a.kernel_size, ho, wo};
  InvolutionShape s;
  const std::string err = CheckShapes(a, x_dims, 4, w_dims, 4, &s);
  const std::string name = "K" + std::to_string(a.kernel_size) + " s" + std::to_string(a.stride) + " p" +
                           std::to_string(a.padding) + " d" + std::to_string(a.dilation) + " g" +
                           std::to_string(a.groups) + " act" + std::to_string(a.activation) + " x" +
                           rednet::DimsToString(x_dims, 4);
  Expect(err.empty(), name + ": contract rejected a valid case: " + err);
  if (!err.empty()) return;
  std::normal_distribution<float> dist;
  // exact vectors (no slack) so any out-of-bounds access is caught by the sanitizers
  std::vector<float> x(n * c * h * w), weight(w_dims[0] * w_dims[1] * ho * wo), y(n * c * ho * wo);
  std::vector<float> scale(c, 1.0f), shift(c, 0.0f);
  for (auto& v : x) v = dist(rng);
  for (auto& v : weight) v = dist(rng);
  if (fused) {
    // negative scales on odd channels: ReLU then clips what the accumulation left positive
    for (size_t i = 0; i < scale.size(); ++i) scale[i] = (i % 2 ? -1.0f : 1.0f) * (1.0f + 0.5f * dist(rng));
    for (auto& v : shift) v = dist(rng);
  }
  using rednet::testing::kFloat16;
  using rednet::testing::kFloat32;
  using rednet::testing::WorstExcess;
  const int64_t terms = a.kernel_size * a.kernel_size + rednet::testing::kEpilogueTerms;
  const auto ref = rednet::testing::EvaluateReference(x, weight, scale, shift, a, s);
  // each check: the largest error as a multiple of the rounding bound of fp32 accumulation (reference.h)
  auto check = [&](double excess, const std::string& what) {
    Expect(excess <= 1, name + " " + what + ": error " + std::to_string(excess) + "x the fp32-accumulation bound");
  };

  const int64_t items = rednet::InvolutionCpuWorkItems(a, s);
  for (const auto& [isa, isa_name] : kIsas) {
    if (!rednet::InvolutionCpuSupports(isa)) continue;
    std::fill(y.begin(), y.end(), std::nanf(""));
    RunInPieces(items, [&](int64_t begin, int64_t end) {
      rednet::InvolutionCpuF32(x.data(), weight.data(), scale.data(), shift.data(), y.data(), a, s, begin, end, isa);
    });
    check(WorstExcess([&](size_t i) { return y[i]; }, ref, terms, kFloat32, nullptr), std::string("CPU fp32 ") + isa_name);
  }

  // the CUDA kernel's body, one "thread" per output pixel of a group
  const rednet::InvolutionParams p = rednet::MakeInvolutionParams(a, s);
  std::vector<float> y_cuda(y.size(), std::nanf(""));
  for (int64_t idx = 0; idx < p.total; ++idx)
    rednet::InvolutionPixel(x.data(), weight.data(), scale.data(), shift.data(), y_cuda.data(), p, idx,
                            [](const float* v) { return *v; }, [](float* dst, float v) { *dst = v; });
  check(WorstExcess([&](size_t i) { return y_cuda[i]; }, ref, terms, kFloat32, nullptr), "CUDA kernel body (host) fp32");

  const auto to_half = [](const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = rednet::FloatToHalf(v[i]);
    return h;
  };
  const auto to_float = [](const std::vector<uint16_t>& h) {
    std::vector<float> v(h.size());
    for (size_t i = 0; i < h.size(); ++i) v[i] = rednet::HalfToFloat(h[i]);
    return v;
  };
  const std::vector<uint16_t> xh = to_half(x), wh = to_half(weight), sch = to_half(scale), shh = to_half(shift);
  std::vector<uint16_t> yh(y.size());
  // the same rounded inputs
  const auto ref16 = rednet::testing::EvaluateReference(to_float(xh), to_float(wh), to_float(sch), to_float(shh), a, s);
  for (const auto& [isa, isa_name] : kIsas) {
    if (!rednet::InvolutionCpuSupports(isa)) continue;
    std::fill(yh.begin(), yh.end(), uint16_t{0x7e00});  // NaN until written
    RunInPieces(items, [&](int64_t begin, int64_t end) {
      rednet::InvolutionCpuF16(xh.data(), wh.data(), sch.data(), shh.data(), yh.data(), a, s, begin, end, isa);
    });
    check(WorstExcess([&](size_t i) { return rednet::HalfToFloat(yh[i]); }, ref16, terms, kFloat32, &kFloat16),
          std::string("CPU fp16 ") + isa_name);
  }

  std::vector<uint16_t> yh_cuda(y.size(), 0x7e00);  // NaN until written
  for (int64_t idx = 0; idx < p.total; ++idx)
    rednet::InvolutionPixel(xh.data(), wh.data(), sch.data(), shh.data(), yh_cuda.data(), p, idx,
                            [](const uint16_t* v) { return rednet::HalfToFloat(*v); },
                            [](uint16_t* dst, float v) { *dst = rednet::FloatToHalf(v); });
  check(WorstExcess([&](size_t i) { return rednet::HalfToFloat(yh_cuda[i]); }, ref16, terms, kFloat32, &kFloat16),
        "CUDA kernel body (host) fp16");
}

void ExpectRejected(const int64_t* x, size_t xr, const int64_t* w, size_t wr, InvolutionAttrs a, const std::string& needle) {
  InvolutionShape s;
  const std::string err = CheckShapes(a, x, xr, w, wr, &s);
  Expect(err.find(needle) != std::string::npos, "rejection should mention '" + needle + "', got '" + err + "'");
}

// Attributes far beyond the tensors (a hostile model's): the kernel leaves its staged layout for the per-pixel body.
int RunExtremeAttributeCases(std::mt19937& rng) {
  RunCase(1, 8, 1, 1, {1, 2048, 0, 1, 1}, rng);
  RunCase(1, 8, 1, 1, {3, rednet::kMaxStride, rednet::kMaxPadding, 1, 1}, rng);
  RunCase(1, 8, 1, 1, {3, 1, rednet::kMaxPadding, rednet::kMaxDilation, 1}, rng);
  RunCase(1, 4, 2, 3, {rednet::kMaxKernelSize, 64, rednet::kMaxPadding, 516, 1}, rng);
  RunCase(2, 64, 3, 5, {1, 4096, 4096, 1, 64}, rng);
  return 5;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  int cases = 0;
  for (int64_t k : {1, 3, 5, 7, 9})
    for (int64_t stride : {1, 2, 3})
      for (int64_t dil : {1, 2}) {
        const int64_t groups = 1 + (k + stride + dil) % 3;
        const int64_t cg = (k == 9 ? 20 : 4 + 4 * (stride % 2));  // 20 > one 16-channel block
        RunCase(1 + (k + stride) % 3, groups * cg, 7 + k + stride, 9 + 2 * dil, {k, stride, (k - 1) / 2 * dil, dil, groups}, rng);
        ++cases;
      }
  RunCase(1, 16, 5, 300, {7, 1, 3, 1, 1}, rng);  // more than two column tiles
  RunCase(2, 32, 9, 260, {3, 2, 1, 1, 2}, rng);
  RunCase(1, 16, 6, 6, {3, 1, 0, 1, 1}, rng);    // no padding
  RunCase(1, 16, 6, 6, {3, 1, 4, 1, 1}, rng);    // padding wider than the kernel reach
  RunCase(1, 16, 1, 1, {7, 1, 3, 1, 1}, rng);    // 1×1 input
  RunCase(2, 48, 11, 13, {7, 2, 3, 1, 3}, rng);
  // the CPU kernel's specialised paths at RedNet's shapes and their edges: 32-channel groups (several channel
  // blocks), widths a multiple of its 7-column blocks (weights read in place only) or not (a staged tail), 14- and
  // 7-column blocks in one row (stride 1 and 2), rows wider than one 56-column weight chunk, bands of unequal height
  // (> 32 output rows)
  RunCase(1, 64, 14, 14, {7, 1, 3, 1, 2}, rng);
  RunCase(2, 64, 15, 15, {7, 2, 3, 1, 2}, rng);
  RunCase(1, 32, 9, 57, {7, 2, 3, 1, 2}, rng);  // 29 columns: two 14-column blocks in place, a staged 7-column tail
  RunCase(1, 32, 7, 7, {7, 1, 3, 1, 2}, rng);
  RunCase(1, 16, 37, 9, {7, 1, 3, 1, 1}, rng);
  RunCase(1, 32, 4, 112, {3, 1, 1, 1, 2}, rng);
  RunCase(1, 32, 3, 119, {7, 1, 3, 1, 1}, rng);
  cases += 13;
  // the planar path (K3, stride 1, dilation 1; AVX-512, and AVX2 for fp32): every width 1..40 (column tails, tiles
  // whose window leaves the row on both sides), heights 1..9 (row tiles of 4 or 2 with remainders, rows above and
  // below the tensor), group widths 1..17 (channel tiles of 4 with single-channel remainders), padding 0, 1 and 2
  for (int64_t w = 1; w <= 40; ++w) {
    const int64_t h = 1 + w % 9, cg = 1 + w % 17, groups = 1 + w % 2;
    const int64_t pad = h >= 3 && w % 5 == 0 ? 0 : w % 7 == 0 ? 2 : 1;
    RunCase(1 + w % 2, groups * cg, h, w, {3, 1, pad, 1, groups}, rng);
  }
  RunCase(1, 21, 37, 19, {3, 1, 1, 1, 1}, rng);  // bands of unequal height, 4-row tiles across a band's end
  cases += 41;
  cases += RunExtremeAttributeCases(rng);

  const int64_t x_ok[4] = {1, 32, 9, 9}, w_ok[4] = {1, 18, 9, 9};
  ExpectRejected(x_ok, 3, w_ok, 4, {3, 1, 1, 1, 2}, "x must have rank 4");
  ExpectRejected(x_ok, 4, w_ok, 3, {3, 1, 1, 1, 2}, "weight must have rank 4");
  const int64_t x30[4] = {1, 30, 9, 9}, w36[4] = {1, 36, 9, 9};
  ExpectRejected(x30, 4, w36, 4, {3, 1, 1, 1, 4}, "C=30");
  const int64_t w_bad[4] = {1, 18, 8, 9};
  ExpectRejected(x_ok, 4, w_bad, 4, {3, 1, 1, 1, 2}, "(1, 18, 8, 9)");
  ExpectRejected(x_ok, 4, w_ok, 4, {4, 1, 1, 1, 2}, "kernel_size=4");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 0, 1, 1, 2}, "stride=0");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 1, -1, 1, 2}, "padding=-1");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 1, 1, 0, 2}, "dilation=0");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 1, 1, 1, 0}, "groups=0");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 1, 1, 1000000, 2}, "supported range");
  const int64_t x_small[4] = {1, 32, 2, 2}, w_small[4] = {1, 98, 1, 1};
  ExpectRejected(x_small, 4, w_small, 4, {7, 1, 0, 1, 2}, "too small");
  const int64_t x_neg[4] = {1, 32, -3, 9};
  ExpectRejected(x_neg, 4, w_ok, 4, {3, 1, 1, 1, 2}, "negative");
  ExpectRejected(x_ok, 4, w_ok, 4, {3, 1, 1, 1, 2, 2}, "activation=2");
  {
    InvolutionShape s;
    const int64_t c31[1] = {31}, c32[1] = {32}, c32x2[2] = {32, 1};
    const int64_t* dims[rednet::kNumInputs] = {x_ok, w_ok, c31, c32};
    const size_t ranks[rednet::kNumInputs] = {4, 4, 1, 1};
    std::string err = rednet::CheckInvolutionShapes({3, 1, 1, 1, 2}, dims, ranks, &s);
    Expect(err.find("scale shape (31,)") != std::string::npos, "scale (31,) should be rejected, got '" + err + "'");
    dims[2] = c32;
    dims[3] = c32x2;
    const size_t ranks2[rednet::kNumInputs] = {4, 4, 1, 2};
    err = rednet::CheckInvolutionShapes({3, 1, 1, 1, 2}, dims, ranks2, &s);
    Expect(err.find("shift shape (32, 1)") != std::string::npos, "shift (32, 1) should be rejected, got '" + err + "'");
  }

  std::printf("involution_cpu_sweep: %d cases (CPU kernel and CUDA kernel body, fp32/fp16) + 15 rejections, %d failures\n",
              cases, failures);
  return failures == 0 ? 0 : 1;
}
