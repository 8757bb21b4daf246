// Op-level timing of the CPU kernel on RedNet-50's involution shapes (the list `deploy/bench/cpu.py` derives from
// the model at 224×224). Built with the plugins, never run by the tests. Items are handed out one at a time from an
// atomic counter to `threads` spinning threads, like ONNX Runtime's ParallelFor; each shape reports the median and the
// minimum of `rounds` timings, each the mean of as many back-to-back calls as fill ~20 ms (`hot`) or of 10 calls that
// each start with their tensors out of the cores' L1/L2 (`cold`: a 64 MB write before each call, not timed), as in a
// network where other layers ran in between. Back-to-back calls find the tensors mostly in L2 at batch 1. The two
// bracket a real run, and a change can win in one and lose in the other (dropping the weight prefetch did: 1.1x hot,
// 0.7x cold). Uses only the kernel's public API, so the same source builds against another version of the kernel for
// A/B rounds.
//   involution_cpu_bench [threads=1] [batch=1] [f32|f16] [rounds=7] [hot|cold]  → one JSON object per shape on stdout
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "half.h"
#include "involution_contract.h"
#include "involution_cpu.h"

namespace {

struct BenchShape {
  int64_t c, h, w, kernel_size, stride;
};

// deploy/bench/cpu.py involution_shapes("rednet50"): stem, then stages 1-4 (first block of stages 2-4 strided).
constexpr BenchShape kRedNet50Shapes[] = {{32, 112, 112, 3, 1}, {64, 56, 56, 7, 1},  {128, 56, 56, 7, 2},
                                          {128, 28, 28, 7, 1},  {256, 28, 28, 7, 2}, {256, 14, 14, 7, 1},
                                          {512, 14, 14, 7, 2},  {512, 7, 7, 7, 1}};

// Runs fn(item) for items [0, count) on `threads` threads (the caller is one of them).
class SpinPool {
 public:
  explicit SpinPool(int threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { Work(); });
  }
  ~SpinPool() {
    stop_ = true;
    for (auto& w : workers_) w.join();
  }
  template <typename Fn>
  void Run(int64_t count, Fn fn) {
    // next_ is published last: a thread still in the previous Drain may take items as soon as it is reset
    done_ = 0;
    fn_ = [](void* f, int64_t i) { (*static_cast<Fn*>(f))(i); };
    arg_ = &fn;
    count_ = count;
    next_ = 0;
    generation_.fetch_add(1);
    Drain();
    while (done_.load() != count) {
    }
  }

 private:
  void Drain() {
    for (int64_t i; (i = next_.fetch_add(1)) < count_;) {
      fn_(arg_, i);
      done_.fetch_add(1);
    }
  }
  void Work() {
    uint64_t seen = 0;
    while (!stop_) {
      if (generation_.load() == seen) continue;
      seen = generation_.load();
      Drain();
    }
  }
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0}, done_{0}, count_{0};
  std::atomic<bool> stop_{false};
  void (*fn_)(void*, int64_t) = nullptr;
  void* arg_ = nullptr;
};

// Tensors 64-byte aligned, as ONNX Runtime's and PyTorch's CPU allocators hand them to the op.
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const Aligned64&) const { return true; }
  bool operator!=(const Aligned64&) const { return false; }
};
template <typename T>
using Tensor = std::vector<T, Aligned64<T>>;

struct Timing {
  double median_us, min_us;
};

template <typename T>
Timing Measure(SpinPool& pool, const rednet::InvolutionAttrs& a, const rednet::InvolutionShape& s,
                          const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& scale,
                          const Tensor<T>& shift, Tensor<T>& y, int rounds, bool cold) {
  const int64_t items = rednet::InvolutionCpuWorkItems(a, s);
  auto call = [&] {
    pool.Run(items, [&](int64_t i) {
      if constexpr (std::is_same_v<T, float>) {
        rednet::InvolutionCpuF32(x.data(), w.data(), scale.data(), shift.data(), y.data(), a, s, i, i + 1);
      } else {
        rednet::InvolutionCpuF16(x.data(), w.data(), scale.data(), shift.data(), y.data(), a, s, i, i + 1);
      }
    });
  };
  using Clock = std::chrono::steady_clock;
  call();
  const auto t0 = Clock::now();
  call();
  const double once = std::chrono::duration<double>(Clock::now() - t0).count();
  // cold: 10 calls a round, each behind its own eviction (a few ms each)
  const int calls = cold ? 10 : std::max(1, int(0.02 / std::max(once, 1e-7)));
  std::vector<double> us;
  for (int r = 0; r < rounds; ++r) {
    double total = 0;
    if (cold) {
      static std::vector<char> evict(64 << 20);
      for (int i = 0; i < calls; ++i) {
        for (size_t byte = 0; byte < evict.size(); byte += 64) evict[byte] += 1;
        const auto start = Clock::now();
        call();
        total += std::chrono::duration<double, std::micro>(Clock::now() - start).count();
      }
    } else {
      const auto start = Clock::now();
      for (int i = 0; i < calls; ++i) call();
      total = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    }
    us.push_back(total / calls);
  }
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us.front()};
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 1;
  const bool half = argc > 3 && std::strcmp(argv[3], "f16") == 0;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 7;
  const bool cold = argc > 5 && std::strcmp(argv[5], "cold") == 0;
  const bool dtype_ok = argc <= 3 || half || std::strcmp(argv[3], "f32") == 0;
  const bool cache_ok = argc <= 5 || cold || std::strcmp(argv[5], "hot") == 0;
  if (threads < 1 || batch < 1 || rounds < 1 || !dtype_ok || !cache_ok) {
    std::fprintf(stderr, "usage: %s [threads>=1] [batch>=1] [f32|f16] [rounds>=1] [hot|cold]\n", argv[0]);
    return 2;
  }
  SpinPool pool(threads);
  std::mt19937 rng(0);
  std::normal_distribution<float> dist;
  for (const BenchShape& b : kRedNet50Shapes) {
    // as exported: the following BatchNorm folded into scale/shift, then ReLU
    const rednet::InvolutionAttrs a{b.kernel_size, b.stride, (b.kernel_size - 1) / 2, 1, b.c / 16,
                                    rednet::kActivationRelu};
    const int64_t ho = rednet::InvolutionOutputSize(b.h, a), wo = rednet::InvolutionOutputSize(b.w, a);
    const rednet::InvolutionShape s{batch, b.c, b.h, b.w, ho, wo};
    Tensor<float> x(batch * b.c * b.h * b.w), w(batch * a.groups * b.kernel_size * b.kernel_size * ho * wo);
    for (auto& v : x) v = dist(rng);
    for (auto& v : w) v = dist(rng);
    Tensor<float> scale(b.c), shift(b.c);
    for (auto& v : scale) v = 1.0f + 0.1f * dist(rng);
    for (auto& v : shift) v = dist(rng);
    Timing t;
    if (half) {
      auto to_half = [](const Tensor<float>& v) {
        Tensor<uint16_t> h(v.size());
        std::transform(v.begin(), v.end(), h.begin(), rednet::FloatToHalf);
        return h;
      };
      Tensor<uint16_t> yh(batch * b.c * ho * wo);
      t = Measure(pool, a, s, to_half(x), to_half(w), to_half(scale), to_half(shift), yh, rounds, cold);
    } else {
      Tensor<float> y(batch * b.c * ho * wo);
      t = Measure(pool, a, s, x, w, scale, shift, y, rounds, cold);
    }
    const double macs = double(batch) * b.c * ho * wo * b.kernel_size * b.kernel_size;
    std::printf("{\"x\": [%lld, %lld, %lld, %lld], \"kernel_size\": %lld, \"stride\": %lld, \"dtype\": \"%s\", "
                "\"threads\": %d, \"cache\": \"%s\", \"median_us\": %.2f, \"min_us\": %.2f, \"gmac_per_s\": %.2f}\n",
                (long long)batch, (long long)b.c, (long long)b.h, (long long)b.w, (long long)b.kernel_size,
                (long long)b.stride, half ? "f16" : "f32", threads, cold ? "cold" : "hot", t.median_us, t.min_us,
                macs / t.median_us / 1e3);
  }
  return 0;
}
