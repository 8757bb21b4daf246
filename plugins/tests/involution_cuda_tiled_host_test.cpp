// The CUDA launcher's kernels run on the host, block by block and phase by phase, exactly as the launcher would
// launch them: the kernel is the one ChooseInvolutionKernel picks, the grid, block and dynamic shared size are the
// launch's (MakeTiledParams), and the shared buffer is a fresh heap allocation of exactly that size, filled with
// NaN bytes, so an overrun is an AddressSanitizer error and a read of anything not staged poisons the output. Every
// thread of a block runs the staging phase, then (the barrier) every thread runs the compute-and-store phase.
// Results are held to the double-precision reference (reference.h) plus the fused epilogue, over a sweep that
// reaches every tiled kernel and the per-pixel fallback in fp32/fp16 and both layouts (NCHW, channel-last with a
// channel pitch), ragged tiles, odd sizes, padding 0 and > 0, dilation 2, 8/16/32-channel groups. Channel-last
// padding channels hold NaN in the inputs (never read as data) and a marker in y (never written).
// Exit code 0 only when all pass; built with sanitizers by `make asan-test`.
#include <cmath>
#include <cstring>
#include <iterator>
#include <cstdio>
#include <map>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "expect.h"
#include "half.h"
#include "involution_contract.h"
#include "involution_cuda_layout.h"
#include "involution_cuda_pixel.h"
#include "involution_cuda_tiled.h"
#include "reference.h"

using rednet::InvolutionAttrs;
using rednet::InvolutionShape;
using rednet::KernelId;
using rednet::Layout;

using rednet::testing::Expect;

namespace {

struct SharedBuffer {
  explicit SharedBuffer(size_t bytes)
      : data(static_cast<unsigned char*>(::operator new[](bytes, std::align_val_t(rednet::kVectorBytes)))) {}
  ~SharedBuffer() { ::operator delete[](data, std::align_val_t(rednet::kVectorBytes)); }
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  unsigned char* data;
};

// The launch, emulated: blocks in order; in each, every thread's phase 1, then every thread's phase 3.
template <class Tile, typename T, Layout L>
void EmulateTiledLaunch(const rednet::TiledArgs<T>& args) {
  const rednet::TiledParams& p = args.p;
  for (int64_t block = 0; block < p.blocks; ++block) {
    SharedBuffer shared(size_t(p.shared_bytes));
    std::memset(shared.data, 0xff, size_t(p.shared_bytes));  // NaN in fp32 and fp16
    for (int thread = 0; thread < p.threads; ++thread) rednet::StageTile<Tile, T, L>(args, block, thread, shared.data);
    for (int thread = 0; thread < p.threads; ++thread)
      rednet::ComputeAndStoreTile<Tile, T, L>(args, block, thread, shared.data);
  }
}

// fp32 values <-> the storage type under test (float, or IEEE half bits)
template <typename T>
T Store(float v) {
  return rednet::Element<T>::FromFloat(v);
}
template <typename T>
float Load(T v) {
  return rednet::Element<T>::ToFloat(v);
}

// A dense NCHW tensor written into `layout` with channel pitch `pitch` (NHWC); padding channels are `fill`.
template <typename T>
std::vector<T> ToLayout(const std::vector<float>& nchw, int64_t n, int64_t c, int64_t h, int64_t w, Layout layout,
                        int64_t pitch, T fill) {
  const rednet::TensorStrides s = rednet::LayoutStrides(layout, c, h, w, pitch);
  std::vector<T> out(size_t(n * s.n), fill);
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t ih = 0; ih < h; ++ih)
        for (int64_t iw = 0; iw < w; ++iw)
          out[in * s.n + ic * s.c + ih * s.h + iw * s.w] = Store<T>(nchw[((in * c + ic) * h + ih) * w + iw]);
  return out;
}

struct Case {
  int64_t n, c, h, w;
  InvolutionAttrs attrs;  // incl. the activation
  int64_t pitch_extra;    // channel-last: pitch = C + pitch_extra (x), C + 2*pitch_extra (y: a different pitch, as
                          // for a channel slice of a wider tensor) and G*K*K + pitch_extra (weight)
};

std::string Describe(const Case& k, const char* type, Layout layout, KernelId id) {
  const InvolutionAttrs& a = k.attrs;
  const int64_t dims[4] = {k.n, k.c, k.h, k.w};
  return std::string(rednet::kKernelNames[int(id)]) + " " + type + (layout == Layout::kNCHW ? " NCHW" : " NHWC") +
         " K" + std::to_string(a.kernel_size) + " s" + std::to_string(a.stride) + " p" + std::to_string(a.padding) +
         " d" + std::to_string(a.dilation) + " g" + std::to_string(a.groups) + " act" + std::to_string(a.activation) +
         " pitch+" + std::to_string(k.pitch_extra) + " x" + rednet::DimsToString(dims, 4);
}

std::map<std::string, int> kernels_chosen;  // "kernel type layout" -> cases the table sent there
int runs = 0;

std::string Variant(KernelId id, bool half, Layout layout) {
  return std::string(rednet::kKernelNames[int(id)]) + (half ? " fp16" : " fp32") +
         (layout == Layout::kNCHW ? " NCHW" : " NHWC");
}

// One case in one storage type and layout: through the kernel the launcher chooses, then through every other
// kernel that fits it (what LaunchInvolution runs when a kernel is named).
template <typename T>
void RunCase(const Case& k, Layout layout, std::mt19937& rng) {
  constexpr bool kHalf = sizeof(T) == 2;
  const InvolutionAttrs& a = k.attrs;
  const int64_t taps = a.kernel_size * a.kernel_size;
  const InvolutionShape s{k.n, k.c, k.h, k.w, rednet::InvolutionOutputSize(k.h, a),
                          rednet::InvolutionOutputSize(k.w, a)};
  const int64_t x_pitch = layout == Layout::kNHWC ? k.c + k.pitch_extra : 0;
  const int64_t w_pitch = layout == Layout::kNHWC ? a.groups * taps + k.pitch_extra : 0;
  const int64_t y_pitch = layout == Layout::kNHWC ? k.c + 2 * k.pitch_extra : 0;
  const rednet::TensorLayout tensor_layout{layout, x_pitch, w_pitch, y_pitch};
  const rednet::InvolutionProblem problem{int(sizeof(T)), tensor_layout, a, s, true};
  const KernelId chosen = rednet::ChooseInvolutionKernel(problem);
  if (!rednet::CheckInvolutionAttrs(a).empty() || s.out_h < 1 || s.out_w < 1 ||
      !rednet::CheckTensorLayout(tensor_layout, a, s).empty()) {
    Expect(false, Describe(k, kHalf ? "fp16" : "fp32", layout, chosen) + ": not a valid case");
    return;
  }
  ++kernels_chosen[Variant(chosen, kHalf, layout)];

  // inputs rounded to the storage type first, so the reference sees exactly what the kernel sees
  std::normal_distribution<float> normal;
  auto draw = [&](int64_t count, float mean, float spread) {
    std::vector<float> v(size_t(count), 0.f);
    for (auto& e : v) e = Load<T>(Store<T>(mean + spread * normal(rng)));
    return v;
  };
  const int64_t weight_channels = a.groups * taps;
  const std::vector<float> x = draw(k.n * k.c * k.h * k.w, 0, 1);
  const std::vector<float> weight = draw(k.n * weight_channels * s.out_h * s.out_w, 0, 1);
  const std::vector<float> scale = draw(k.c, 1, 0.5f), shift = draw(k.c, 0, 0.5f);
  const rednet::testing::Reference ref = rednet::testing::EvaluateReference(x, weight, scale, shift, a, s);

  const T nan = Store<T>(std::nanf("")), marker = Store<T>(-1234.5f);
  const std::vector<T> x_l = ToLayout<T>(x, k.n, k.c, k.h, k.w, layout, x_pitch, nan);
  const std::vector<T> w_l = ToLayout<T>(weight, k.n, weight_channels, s.out_h, s.out_w, layout, w_pitch, nan);
  std::vector<T> scale_t(scale.size()), shift_t(shift.size());
  for (size_t i = 0; i < scale.size(); ++i) scale_t[i] = Store<T>(scale[i]), shift_t[i] = Store<T>(shift[i]);
  const std::vector<float> y_nan(size_t(k.n * k.c * s.out_h * s.out_w), std::nanf(""));
  const rednet::TensorStrides ys = rednet::LayoutStrides(layout, k.c, s.out_h, s.out_w, y_pitch);

  auto run = [&](KernelId id) {
    const std::string name = Describe(k, kHalf ? "fp16" : "fp32", layout, id);
    // y: padding channels hold the marker, data elements NaN until written
    std::vector<T> y_l = ToLayout<T>(y_nan, k.n, k.c, s.out_h, s.out_w, layout, y_pitch, marker);
    const bool tiled = rednet::VisitTiledKernel(id, [&](auto tile) {
      using Tile = decltype(tile);
      const rednet::TiledArgs<T> args{x_l.data(),     w_l.data(), scale_t.data(), shift_t.data(), y_l.data(),
                                      rednet::MakeTiledParams(rednet::kTileConfigs[int(id)], problem)};
      Expect(args.p.threads <= rednet::kMaxTiledThreads && args.p.shared_bytes <= rednet::kMaxTiledSharedBytes,
             name + ": launch exceeds the kernel's bounds");
      if (layout == Layout::kNCHW)
        EmulateTiledLaunch<Tile, T, Layout::kNCHW>(args);
      else
        EmulateTiledLaunch<Tile, T, Layout::kNHWC>(args);
    });
    if (!tiled) {  // the per-pixel kernel: one thread per output pixel of a group
      const rednet::InvolutionParams p = rednet::MakeInvolutionParams(a, s, tensor_layout);
      for (int64_t idx = 0; idx < p.total; ++idx)
        rednet::InvolutionPixel(x_l.data(), w_l.data(), scale_t.data(), shift_t.data(), y_l.data(), p, idx,
                                [](const T* v) { return Load<T>(*v); }, [](T* dst, float v) { *dst = Store<T>(v); });
    }
    ++runs;
    const double worst = rednet::testing::WorstExcess(
        [&](size_t i) {
          const int64_t ow = int64_t(i) % s.out_w, oh = int64_t(i) / s.out_w % s.out_h;
          const int64_t ic = int64_t(i) / (s.out_w * s.out_h) % k.c, in = int64_t(i) / (s.out_w * s.out_h * k.c);
          return Load<T>(y_l[size_t(in * ys.n + ic * ys.c + oh * ys.h + ow * ys.w)]);
        },
        ref, taps + rednet::testing::kEpilogueTerms, rednet::testing::kFloat32,
        kHalf ? &rednet::testing::kFloat16 : nullptr);
    Expect(worst <= 1, name + ": error " + std::to_string(worst) + "x the rounding bound");
    if (layout == Layout::kNHWC) {
      size_t touched = 0;
      for (int64_t pixel = 0; pixel < k.n * s.out_h * s.out_w; ++pixel)
        for (int64_t ic = k.c; ic < y_pitch; ++ic)
          touched += std::memcmp(&y_l[size_t(pixel * y_pitch + ic)], &marker, sizeof(T)) != 0;
      Expect(touched == 0, name + ": " + std::to_string(touched) + " padding channels of y were written");
    }
  };
  run(chosen);
  for (int id = 0; id < int(std::size(rednet::kKernelNames)); ++id)
    if (KernelId(id) != chosen && rednet::InvolutionKernelFits(KernelId(id), problem)) run(KernelId(id));
}

void RunEverywhere(const Case& k, std::mt19937& rng) {
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    RunCase<float>(k, layout, rng);
    RunCase<uint16_t>(k, layout, rng);
  }
}

// The table's choices for RedNet-50's involutions (deploy/gpu_check.py REDNET50_SHAPES) and its preconditions.
void CheckTable() {
  struct Row {
    int64_t c, h, k, stride, groups;
    KernelId expected;
  };
  const Row rows[] = {{32, 112, 3, 1, 2, KernelId::kK3S1},        {64, 56, 7, 1, 4, KernelId::kK7S1},
                      {128, 56, 7, 2, 8, KernelId::kK7S2},        {128, 28, 7, 1, 8, KernelId::kK7S1},
                      {256, 28, 7, 2, 16, KernelId::kK7S2Small},  {256, 14, 7, 1, 16, KernelId::kK7S1Small},
                      {512, 14, 7, 2, 32, KernelId::kK7S2Small},  {512, 7, 7, 1, 32, KernelId::kK7S1Small}};
  for (const Row& r : rows)
    for (int bytes : {2, 4})
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        const InvolutionAttrs a{r.k, r.stride, (r.k - 1) / 2, 1, r.groups};
        const int64_t out = rednet::InvolutionOutputSize(r.h, a);
        const InvolutionShape s{8, r.c, r.h, r.h, out, out};
        const KernelId got = rednet::ChooseInvolutionKernel({bytes, {layout, 0, 0, 0}, a, s, true});
        Expect(got == r.expected, "RedNet-50 C=" + std::to_string(r.c) + " H=" + std::to_string(r.h) + " K" +
                                      std::to_string(r.k) + " s" + std::to_string(r.stride) + " chose " +
                                      rednet::kKernelNames[int(got)] + ", expected " +
                                      rednet::kKernelNames[int(r.expected)]);
      }
  const InvolutionAttrs a{7, 1, 3, 1, 4};
  const InvolutionShape s{1, 64, 56, 56, 56, 56};
  auto choose = [](int bytes, rednet::TensorLayout layout, InvolutionAttrs attrs, InvolutionShape shape,
                   bool aligned) {
    return rednet::ChooseInvolutionKernel({bytes, layout, attrs, shape, aligned});
  };
  const rednet::TensorLayout nhwc{Layout::kNHWC, 0, 0, 0};
  Expect(choose(2, nhwc, a, s, false) == KernelId::kPerPixel, "misaligned channel-last pointers must fall back");
  Expect(choose(4, nhwc, a, s, false) == KernelId::kPerPixel, "misaligned channel-last pointers must fall back (fp32)");
  Expect(choose(2, {Layout::kNHWC, 68, 0, 68}, a, s, true) == KernelId::kPerPixel,
         "an fp16 channel pitch that is not a 16-byte multiple must fall back");
  Expect(choose(2, {Layout::kNCHW, 0, 0, 0}, a, s, false) == KernelId::kK7S1, "NCHW moves no vectors through global");
  Expect(choose(4, {Layout::kNCHW, 0, 0, 0}, {5, 1, 2, 1, 4}, s, true) == KernelId::kPerPixel, "K=5 has no tile");
  Expect(choose(2, {Layout::kNCHW, 0, 0, 0}, {7, 1, 3, 1, 16}, s, true) == KernelId::kPerPixel,
         "fp16 4-channel groups are narrower than a 16-byte chunk");
  Expect(choose(4, {Layout::kNCHW, 0, 0, 0}, {7, 1, 3, 1, 16}, s, true) == KernelId::kK7S1Small,
         "fp32 4-channel groups are narrower than K7S1's 16 channels per thread, not than K7S1Small's 4");
  Expect(choose(2, {Layout::kNCHW, 0, 0, 0}, {7, 1, 6, 2, 4}, s, true) == KernelId::kK7S1Small,
         "dilation 2 leaves the two-pixel K7S1 for the one-pixel K7S1Small");
  Expect(choose(4, {Layout::kNCHW, 0, 0, 0}, {7, 1, 3, 40, 4}, {1, 64, 300, 300, 60, 60}, true) == KernelId::kPerPixel,
         "a halo beyond the shared memory budget must fall back");
  // a named kernel (LaunchInvolution's `kernel`) fits only its own K and stride; the map size only picks
  Expect(!rednet::InvolutionKernelFits(KernelId::kK3S1, {4, {Layout::kNCHW, 0, 0, 0}, a, s, true}),
         "K3S1 must not take a K=7 problem");
  Expect(!rednet::InvolutionKernelFits(KernelId::kK7S2, {4, {Layout::kNCHW, 0, 0, 0}, a, s, true}),
         "K7S2 must not take a stride-1 problem");
  Expect(rednet::InvolutionKernelFits(KernelId::kK7S1Small, {4, {Layout::kNCHW, 0, 0, 0}, a, s, true}) &&
             rednet::InvolutionKernelFits(KernelId::kPerPixel, {4, {Layout::kNCHW, 0, 0, 0}, a, s, true}),
         "the small-map kernel and PerPixel run any K=7 stride-1 map");
  // LaunchInvolution refuses channel-last pitches narrower than their tensors, naming the pitch
  const std::string narrow = rednet::CheckTensorLayout({Layout::kNHWC, 60, 0, 0}, a, s);
  Expect(narrow.find("x pitch 60") != std::string::npos && narrow.find("64 channels") != std::string::npos,
         "a 60-element x pitch for 64 channels should be refused, got '" + narrow + "'");
  const std::string weight_pitch = rednet::CheckTensorLayout({Layout::kNHWC, 0, 195, 0}, a, s);
  Expect(weight_pitch.find("weight pitch 195") != std::string::npos,
         "weight pitch 195 < 196 should be refused, got '" + weight_pitch + "'");
  Expect(rednet::CheckTensorLayout({Layout::kNHWC, 64, 200, 72}, a, s).empty(), "pitches >= channels are fine");
  Expect(rednet::CheckTensorLayout({Layout::kNCHW, 1, 1, 1}, a, s).empty(), "NCHW ignores pitches");
  // a hostile model's attributes: the halo's size is computed in 64 bits and sends these to the per-pixel kernel
  Expect(choose(2, {Layout::kNCHW, 0, 0, 0}, {3, 1, rednet::kMaxPadding, rednet::kMaxDilation, 1}, {1, 16, 1, 1, 1, 1},
                true) == KernelId::kPerPixel,
         "dilation 65535 must fall back");
  Expect(choose(2, {Layout::kNCHW, 0, 0, 0}, {7, 2, rednet::kMaxPadding, rednet::kMaxDilation, 1},
                {1, 16, 1, 1, 32767, 32767}, true) == KernelId::kPerPixel,
         "a halo of 2^34 pixels must fall back");
}

}  // namespace

int main() {
  std::mt19937 rng(13);
  CheckTable();
  // {n, c, h, w, {K, stride, padding, dilation, groups, activation}, pitch_extra}
  const Case cases[] = {
      {2, 32, 19, 37, {3, 1, 1, 1, 2, 1}, 8},   // K3S1: 16-channel groups, ragged 8×32 tiles
      {1, 32, 9, 33, {3, 1, 0, 1, 1, 0}, 0},    // K3S1: a 32-channel group (two slices per thread), no padding
      {1, 48, 12, 20, {3, 1, 2, 2, 3, 0}, 8},   // K3S1 dilation 2
      {2, 32, 21, 35, {3, 2, 1, 1, 2, 1}, 0},   // K3S2: odd sizes, ragged tiles
      {1, 32, 13, 18, {3, 2, 2, 2, 2, 0}, 8},   // K3S2 dilation 2
      {1, 32, 17, 35, {7, 1, 3, 1, 2, 1}, 8},   // K7S1: 17×35 > 196 pixels, ragged tiles and cells
      {2, 64, 20, 21, {7, 1, 0, 1, 2, 0}, 0},   // K7S1: 32-channel groups, no padding
      {1, 32, 22, 23, {7, 1, 6, 2, 2, 1}, 0},   // K7S1 dilation 2 (-> K7S1Small: two-pixel cells need dilation 1)
      {1, 16, 35, 33, {7, 2, 3, 1, 2, 0}, 8},   // K7S2: 8-channel groups (two slices)
      {2, 32, 33, 30, {7, 2, 3, 1, 2, 1}, 0},   // K7S2: 16-channel groups (four slices)
      {1, 32, 31, 29, {7, 2, 5, 2, 4, 0}, 8},   // K7S2 dilation 2 (-> K7S2Small), 8-channel groups
      {3, 64, 7, 7, {7, 1, 3, 1, 4, 1}, 0},     // K7S1Small: RedNet's 7×7 layer, one exact tile
      {2, 32, 14, 14, {7, 1, 3, 1, 2, 0}, 8},   // K7S1Small: 14×14, four tiles
      {1, 24, 11, 13, {7, 1, 3, 1, 3, 1}, 0},   // K7S1Small: 8-channel groups, ragged tiles
      {1, 64, 12, 9, {7, 1, 6, 2, 2, 0}, 8},    // K7S1Small dilation 2, 32-channel groups
      {2, 32, 14, 14, {7, 2, 3, 1, 2, 1}, 0},   // K7S2Small: RedNet's 14→7
      {1, 48, 27, 26, {7, 2, 3, 1, 3, 0}, 8},   // K7S2Small: 27×26 -> 14×13
      {1, 16, 15, 17, {7, 2, 0, 1, 2, 1}, 0},   // K7S2Small: no padding, 8-channel groups
      {1, 32, 21, 19, {7, 2, 6, 2, 1, 0}, 0},   // K7S2Small dilation 2, a 32-channel group
      // the per-pixel fallback
      {1, 40, 9, 11, {5, 1, 2, 1, 2, 1}, 8},    // K=5: no tile (channel-last pitch 48)
      {2, 20, 13, 12, {7, 1, 3, 1, 1, 0}, 4},   // 20 channels (pitch 24, kHWC8's): fp16 not whole 16-byte chunks
      {1, 16, 10, 10, {3, 1, 1, 1, 4, 1}, 0},   // 4-channel groups, narrower than a chunk
      {1, 16, 9, 9, {3, 3, 1, 1, 2, 0}, 8},     // stride 3
      {1, 16, 60, 60, {7, 1, 3, 8, 2, 1}, 0},   // dilation 8: the halo exceeds the shared memory budget
  };
  for (const Case& k : cases) RunEverywhere(k, rng);

  // the table sends some case to every kernel, in both types and layouts
  for (int id = 0; id < int(std::size(rednet::kKernelNames)); ++id)
    for (bool half : {false, true})
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        const std::string variant = Variant(KernelId(id), half, layout);
        Expect(kernels_chosen[variant] > 0, variant + " was never chosen in the sweep");
      }
  std::printf("involution_cuda_tiled_host_test: %d cases × fp32/fp16 × NCHW/NHWC reach %zu kernel variants; "
              "%d kernel runs (the chosen kernel and every other that fits) + table checks, %d failures\n",
              int(std::size(cases)), kernels_chosen.size(), runs, rednet::testing::failures);
  return rednet::testing::failures == 0 ? 0 : 1;
}
