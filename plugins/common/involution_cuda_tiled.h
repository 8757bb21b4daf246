// The tiled CUDA involution: one block per (n, group, output tile). Its phases are __host__ __device__ functions
// of (block, thread, shared buffer), so the host tests (plugins/tests/involution_cuda_tiled_host_test.cpp) run
// every thread of every block through them, phase by phase, with a shared buffer of exactly the launch's size.
//
//   1. StageTile: the tile's input halo for the group's channels -> shared memory, 16-byte chunks of channels per
//      (halo pixel), zero where the halo leaves the image (so the inner loop has no bound branches); in the
//      channel-last layout also the tile's weights, transposed to [tap][pixel] (the weight's taps are the
//      contiguous axis there, so reading them per tap straight from global memory would not coalesce).
//   2. barrier
//   3. ComputeAndStoreTile: thread = (cell, channel slice); a cell is 1 or 2 adjacent output pixels of a row. Per
//      kernel row the thread reads the (pixels − 1)·stride + K halo columns its pixels need once each (one vector read
//      of its slice's channels, converted to fp32 once) and applies each to every pixel that uses it, with that
//      pixel's weight for the tap (global memory, coalesced across cells, or shared memory); accumulation in fp32
//      registers; then the epilogue and the store (16-byte vectors in channel-last). Two pixels per thread cut the
//      shared-memory reads and half→float conversions per FMA by 1.75× at K=7, stride 1 (8 columns for 14 taps).
//
// Shared memory holds the halo channel-last ([halo pixel][group channel]) in both layouts, so a thread's channel
// slice is one vector read per column.
//
// The launcher's choice (ChooseInvolutionKernel, the only place a shape meets a kernel):
//
//   | kernel    | output tile | channels/thread | pixels/thread | threads (16-ch group) | used when                  |
//   | K3S1      | 8 × 32      | 16              | 1             | 256                   | K=3, stride 1              |
//   | K3S2      | 8 × 16      | 16              | 1             | 128                   | K=3, stride 2              |
//   | K7S1      | 8 × 16      | 8               | 2             | 128                   | K=7, s 1, Ho·Wo > 196, d 1 |
//   | K7S2      | 8 × 8       | 4               | 2             | 128                   | K=7, s 2, Ho·Wo > 196, d 1 |
//   | K7S1Small | 7 × 7       | 4               | 1             | 196                   | K=7, s 1, otherwise        |
//   | K7S2Small | 7 × 7       | 4               | 1             | 196                   | K=7, s 2, otherwise        |
//   | PerPixel  | one thread per output pixel of a group (involution_cuda_pixel.h)      | everything else            |
//
// "otherwise": Ho·Wo ≤ 196 (RedNet's 14×14 and 7×7 maps), or the two-pixel kernel does not fit (dilation > 1: the
// pixels of a cell then share no columns; group channels not a multiple of its channels/thread).
// Threads = cells × min(group channels / channels per thread, 256 / cells); a thread covers the remaining channel
// slices in turn.
//
// A tiled kernel also needs: group channels a multiple of 16 bytes' worth of elements (4 fp32, 8 fp16) and of its
// channels/thread; in channel-last, channel pitches of 16-byte multiples and 16-byte-aligned pointers; shared
// memory within kMaxTiledSharedBytes (the halo grows with dilation); a grid within 2^31 blocks. Padding is a
// runtime value in every kernel, dilation in the one-pixel ones. Small maps use narrow channel slices (several
// threads per pixel) so RedNet's 7×7 and 14×14 layers give every SM work at batch 8.
#pragma once

#include <cstdint>

#include "involution_contract.h"
#include "involution_cuda_layout.h"

namespace rednet {

enum class KernelId : int { kPerPixel, kK3S1, kK3S2, kK7S1, kK7S2, kK7S1Small, kK7S2Small };

struct TileConfig {
  int kernel_size, stride, tile_h, tile_w, channels_per_thread;
  int pixels_per_thread;  // adjacent output pixels along W per thread (> 1: dilation 1 only)
};

// Indexed by KernelId; the table above in numbers.
inline constexpr TileConfig kTileConfigs[] = {
    {0, 0, 0, 0, 0, 0},    // kPerPixel
    {3, 1, 8, 32, 16, 1},  // kK3S1
    {3, 2, 8, 16, 16, 1},  // kK3S2
    {7, 1, 8, 16, 8, 2},   // kK7S1
    {7, 2, 8, 8, 4, 2},    // kK7S2
    {7, 1, 7, 7, 4, 1},    // kK7S1Small
    {7, 2, 7, 7, 4, 1},    // kK7S2Small
};
inline constexpr const char* kKernelNames[] = {"PerPixel", "K3S1", "K3S2", "K7S1", "K7S2", "K7S1Small", "K7S2Small"};
inline constexpr int64_t kSmallMapPixels = 14 * 14;
inline constexpr int kMaxTiledThreads = 256;
// Registers: at most 65536 / (3 * 256) = 85 per thread, so three blocks share an SM (ptxas -v: 51–80 on sm_75…sm_90)
inline constexpr int kMinTiledBlocksPerSm = 3;
// The default dynamic shared memory limit of every architecture (no opt-in attribute needed).
inline constexpr int64_t kMaxTiledSharedBytes = 48 * 1024;
inline constexpr int kVectorBytes = 16;

// Everything ChooseInvolutionKernel looks at.
struct InvolutionProblem {
  int element_bytes;  // 4 (fp32) or 2 (fp16)
  TensorLayout layout;
  InvolutionAttrs attrs;
  InvolutionShape shape;
  bool pointers_aligned;  // x and y 16-byte aligned (what channel-last vector accesses need)
};

// What a tiled kernel indexes with; built by MakeTiledParams.
struct TiledParams {
  int64_t h, w, out_h, out_w, groups, group_channels;
  int padding, dilation, activation;  // kernel size and stride are the kernel's template arguments
  TensorStrides x, weight, y;
  int tiles_h, tiles_w, halo_h, halo_w;
  int slices;         // group_channels / channels_per_thread
  int slice_threads;  // threads per cell (a thread's pixels); each covers slices slice, slice + slice_threads, ...
  int threads;        // cells * slice_threads
  int64_t blocks;     // n * groups * tiles_h * tiles_w
  int halo_bytes;     // shared bytes of the halo (16-byte rounded); the transposed weights follow
  int shared_bytes;   // the launch's dynamic shared memory
};

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Input rows (or columns) a tile of `tile` output rows (columns) reads.
inline int64_t HaloExtent(int tile, const InvolutionAttrs& a) {
  return (tile - 1) * a.stride + (a.kernel_size - 1) * a.dilation + 1;
}
// Shared bytes of a tiled kernel's halo (16-byte rounded) and of the whole launch (64-bit: hostile dilations make
// the halo huge; ChooseInvolutionKernel bounds it before anything narrower holds it).
inline int64_t TiledHaloBytes(const TileConfig& t, const InvolutionProblem& pr) {
  const int64_t pixels = HaloExtent(t.tile_h, pr.attrs) * HaloExtent(t.tile_w, pr.attrs);
  return CeilDiv(pixels * (pr.shape.c / pr.attrs.groups) * pr.element_bytes, kVectorBytes) * kVectorBytes;
}
inline int64_t TiledSharedBytes(const TileConfig& t, const InvolutionProblem& pr) {
  // channel-last: the tile's weights as [tap][pixel], rows one element longer than the tile (against bank conflicts)
  const int64_t taps = pr.attrs.kernel_size * pr.attrs.kernel_size;
  const int64_t weight_bytes =
      pr.layout.order == Layout::kNHWC ? taps * (t.tile_h * t.tile_w + 1) * pr.element_bytes : 0;
  return TiledHaloBytes(t, pr) + weight_bytes;
}

inline TiledParams MakeTiledParams(const TileConfig& t, const InvolutionProblem& pr) {
  const InvolutionAttrs& a = pr.attrs;
  const InvolutionShape& s = pr.shape;
  TiledParams p{};
  p.h = s.h, p.w = s.w, p.out_h = s.out_h, p.out_w = s.out_w, p.groups = a.groups;
  p.group_channels = s.c / a.groups;
  p.padding = int(a.padding), p.dilation = int(a.dilation), p.activation = int(a.activation);
  const InvolutionStrides strides = MakeInvolutionStrides(pr.layout, a, s);
  p.x = strides.x, p.weight = strides.weight, p.y = strides.y;
  p.tiles_h = int(CeilDiv(s.out_h, t.tile_h)), p.tiles_w = int(CeilDiv(s.out_w, t.tile_w));
  // the halo's extent is bounded before this is used (ChooseInvolutionKernel checks it in 64 bits)
  p.halo_h = int(HaloExtent(t.tile_h, a)), p.halo_w = int(HaloExtent(t.tile_w, a));
  p.slices = int(p.group_channels / t.channels_per_thread);
  const int cells = t.tile_h * t.tile_w / t.pixels_per_thread;
  const int max_slice_threads = kMaxTiledThreads / cells;
  p.slice_threads = p.slices < max_slice_threads ? p.slices : max_slice_threads;
  p.threads = cells * p.slice_threads;
  p.blocks = s.n * a.groups * p.tiles_h * p.tiles_w;
  p.halo_bytes = int(TiledHaloBytes(t, pr));
  p.shared_bytes = int(TiledSharedBytes(t, pr));
  return p;
}

// The table's row for K, stride and map size, preconditions aside.
inline KernelId TiledKernelFor(const InvolutionAttrs& a, const InvolutionShape& s) {
  const bool small = s.out_h * s.out_w <= kSmallMapPixels;
  if (a.kernel_size == 3 && a.stride == 1) return KernelId::kK3S1;
  if (a.kernel_size == 3 && a.stride == 2) return KernelId::kK3S2;
  if (a.kernel_size == 7 && a.stride == 1) return small ? KernelId::kK7S1Small : KernelId::kK7S1;
  if (a.kernel_size == 7 && a.stride == 2) return small ? KernelId::kK7S2Small : KernelId::kK7S2;
  return KernelId::kPerPixel;
}

// Whether `id` can run `pr`: PerPixel always; a tiled kernel when K and stride are its own and the preconditions
// of the header comment hold.
inline bool InvolutionKernelFits(KernelId id, const InvolutionProblem& pr) {
  if (id == KernelId::kPerPixel) return true;
  const TileConfig& t = kTileConfigs[int(id)];
  if (pr.attrs.kernel_size != t.kernel_size || pr.attrs.stride != t.stride) return false;
  if (t.pixels_per_thread > 1 && pr.attrs.dilation != 1) return false;
  const int64_t group_channels = pr.shape.c / pr.attrs.groups;
  const int64_t vector_elements = kVectorBytes / pr.element_bytes;
  if (group_channels % vector_elements != 0 || group_channels % t.channels_per_thread != 0) return false;
  if (pr.layout.order == Layout::kNHWC) {
    const TensorLayout pitches = ResolvePitches(pr.layout, pr.attrs, pr.shape);
    // the weight is read per element; only x and y move as vectors
    if (!pr.pointers_aligned || pitches.x_pitch % vector_elements != 0 || pitches.y_pitch % vector_elements != 0)
      return false;
  }
  if (TiledSharedBytes(t, pr) > kMaxTiledSharedBytes) return false;
  const int64_t tiles = CeilDiv(pr.shape.out_h, t.tile_h) * CeilDiv(pr.shape.out_w, t.tile_w);
  return pr.shape.n * pr.attrs.groups * tiles < (int64_t(1) << 31);
}

// The launcher's table (see the header comment): the tiled kernel for the shape where it fits, else the small-map
// kernel of the same K and stride (one pixel per thread, any dilation) where that fits, else PerPixel.
inline KernelId ChooseInvolutionKernel(const InvolutionProblem& pr) {
  const KernelId id = TiledKernelFor(pr.attrs, pr.shape);
  if (InvolutionKernelFits(id, pr)) return id;
  const KernelId small = id == KernelId::kK7S1   ? KernelId::kK7S1Small
                         : id == KernelId::kK7S2 ? KernelId::kK7S2Small
                                                 : id;
  return small != id && InvolutionKernelFits(small, pr) ? small : KernelId::kPerPixel;
}

// Calls fn(TileShape<...>{}) for a tiled KernelId: the one switch from the table's numbers to template arguments,
// shared by the launcher and the host tests. Returns false for kPerPixel.
template <int K, int S, int TH, int TW, int CB, int PW>
struct TileShape {
  static constexpr int kKernel = K, kStride = S, kTileH = TH, kTileW = TW, kPixels = TH * TW, kChannels = CB;
  static constexpr int kPixelsPerThread = PW, kCellsW = TW / PW, kCells = TH * TW / PW;
  static_assert(TW % PW == 0, "a tile row holds whole cells");
};
template <KernelId id>
using TileOf = TileShape<kTileConfigs[int(id)].kernel_size, kTileConfigs[int(id)].stride, kTileConfigs[int(id)].tile_h,
                         kTileConfigs[int(id)].tile_w, kTileConfigs[int(id)].channels_per_thread,
                         kTileConfigs[int(id)].pixels_per_thread>;

template <typename Fn>
bool VisitTiledKernel(KernelId id, Fn&& fn) {
  switch (id) {
    case KernelId::kK3S1: fn(TileOf<KernelId::kK3S1>{}); return true;
    case KernelId::kK3S2: fn(TileOf<KernelId::kK3S2>{}); return true;
    case KernelId::kK7S1: fn(TileOf<KernelId::kK7S1>{}); return true;
    case KernelId::kK7S2: fn(TileOf<KernelId::kK7S2>{}); return true;
    case KernelId::kK7S1Small: fn(TileOf<KernelId::kK7S1Small>{}); return true;
    case KernelId::kK7S2Small: fn(TileOf<KernelId::kK7S2Small>{}); return true;
    case KernelId::kPerPixel: return false;
  }
  return false;
}

// A tiled kernel's argument: the tensors (scale, shift: (C,)) and their indexing.
template <typename T>
struct TiledArgs {
  const T *x, *weight, *scale, *shift;
  T* y;
  TiledParams p;
};

struct TileIndex {
  int64_t n, g, tile_y, tile_x;
};

REDNET_HD TileIndex DecodeBlock(const TiledParams& p, int64_t block) {
  const int64_t tx = block % p.tiles_w;
  int64_t rest = block / p.tiles_w;
  const int64_t ty = rest % p.tiles_h;
  rest /= p.tiles_h;
  return {rest / p.groups, rest % p.groups, ty, tx};
}

// Phase 1. Thread `thread` of `block` stages its share of the halo (and, channel-last, of the weights).
template <class Tile, typename T, Layout L>
REDNET_HD void StageTile(const TiledArgs<T>& a, int64_t block, int thread, unsigned char* shared) {
  constexpr int kChunk = kVectorBytes / int(sizeof(T));
  using Chunk = Vec<T, kChunk>;
  const TiledParams& p = a.p;
  const TileIndex o = DecodeBlock(p, block);
  const int cg = int(p.group_channels), chunks = cg / kChunk, halo_pixels = p.halo_h * p.halo_w;
  const int64_t hi0 = o.tile_y * Tile::kTileH * Tile::kStride - p.padding;
  const int64_t wi0 = o.tile_x * Tile::kTileW * Tile::kStride - p.padding;
  const T* x_group = a.x + o.n * p.x.n + o.g * cg * p.x.c;
  for (int item = thread; item < chunks * halo_pixels; item += p.threads) {
    // consecutive threads: consecutive pixels of one channel chunk (NCHW, coalesced scalar reads) or consecutive
    // chunks of one pixel (NHWC, contiguous 16-byte reads)
    const int pixel = L == Layout::kNCHW ? item % halo_pixels : item / chunks;
    const int chunk = L == Layout::kNCHW ? item / halo_pixels : item % chunks;
    const int64_t hi = hi0 + pixel / p.halo_w, wi = wi0 + pixel % p.halo_w;
    Chunk v;
    if (hi >= 0 && hi < p.h && wi >= 0 && wi < p.w) {
      const T* src = x_group + chunk * kChunk * p.x.c + hi * p.x.h + wi * p.x.w;
      if constexpr (L == Layout::kNHWC) {
        v = LoadVec<Chunk>(src);
      } else {
        REDNET_UNROLL
        for (int j = 0; j < kChunk; ++j) v.v[j] = src[j * p.x.c];
      }
    } else {  // padding: zeros, so the compute phase needs no bound checks
      REDNET_UNROLL
      for (int j = 0; j < kChunk; ++j) v.v[j] = Element<T>::FromFloat(0.f);
    }
    StoreVec(shared + (int64_t(pixel) * cg + chunk * kChunk) * int64_t(sizeof(T)), v);
  }
  if constexpr (L == Layout::kNHWC) {
    constexpr int kTaps = Tile::kKernel * Tile::kKernel;
    T* w_shared = reinterpret_cast<T*>(shared + p.halo_bytes);
    const T* w_group = a.weight + o.n * p.weight.n + o.g * kTaps;  // channel stride 1
    // consecutive threads: consecutive taps of one pixel, the contiguous axis of the channel-last weight
    for (int item = thread; item < kTaps * Tile::kPixels; item += p.threads) {
      const int pixel = item / kTaps, tap = item % kTaps;
      const int64_t ho = o.tile_y * Tile::kTileH + pixel / Tile::kTileW;
      const int64_t wo = o.tile_x * Tile::kTileW + pixel % Tile::kTileW;
      // [tap][pixel within its cell][cell]: a warp's threads (consecutive cells) read consecutive elements
      const int px = pixel % Tile::kTileW, cell = pixel / Tile::kTileW * Tile::kCellsW + px / Tile::kPixelsPerThread;
      const int slot = px % Tile::kPixelsPerThread * Tile::kCells + cell;
      if (ho < p.out_h && wo < p.out_w)  // a ragged tile's missing pixels: results never stored
        w_shared[tap * (Tile::kPixels + 1) + slot] = w_group[ho * p.weight.h + wo * p.weight.w + tap];
    }
  }
}

// Phase 3 (after the barrier). Thread `thread` computes and stores its cell's channel slices; a cell is
// kPixelsPerThread adjacent output pixels of a row, which share halo columns: per kernel row a thread reads
// (PW-1)*S + K columns instead of PW*K.
template <class Tile, typename T, Layout L>
REDNET_HD void ComputeAndStoreTile(const TiledArgs<T>& a, int64_t block, int thread, const unsigned char* shared) {
  constexpr int K = Tile::kKernel, S = Tile::kStride, CB = Tile::kChannels, PW = Tile::kPixelsPerThread;
  constexpr int kColumns = (PW - 1) * S + K;
  using Slice = Vec<T, CB>;
  const TiledParams& p = a.p;
  const TileIndex o = DecodeBlock(p, block);
  const int cell = thread % Tile::kCells, py = cell / Tile::kCellsW, px = cell % Tile::kCellsW * PW;
  const int64_t ho = o.tile_y * Tile::kTileH + py, wo = o.tile_x * Tile::kTileW + px;
  if (ho >= p.out_h || wo >= p.out_w) return;  // a ragged tile's idle threads
  const int cg = int(p.group_channels);
  const int dilation = PW > 1 ? 1 : p.dilation;  // cells share columns only at dilation 1 (InvolutionKernelFits)
  const int tap_row = dilation * p.halo_w * cg, tap_col = dilation * cg;  // halo elements between taps
  const T* halo = reinterpret_cast<const T*>(shared) + (py * S * p.halo_w + px * S) * cg;
  const T* w_pixel = a.weight + o.n * p.weight.n + o.g * K * K * p.weight.c + ho * p.weight.h + wo * p.weight.w;
  // NCHW (weights from global memory): pixel q's weights are q elements on; a pixel past the map's edge computes
  // with its cell's first weights and is not stored
  int w_offset[PW];
  REDNET_UNROLL
  for (int q = 0; q < PW; ++q) w_offset[q] = wo + q < p.out_w ? q : 0;
  const T* w_shared = reinterpret_cast<const T*>(shared + p.halo_bytes) + cell;
  for (int slice = thread / Tile::kCells; slice < p.slices; slice += p.slice_threads) {
    float acc[PW][CB];
    REDNET_UNROLL
    for (int q = 0; q < PW; ++q) {
      REDNET_UNROLL
      for (int j = 0; j < CB; ++j) acc[q][j] = 0.f;
    }
    // rows stay a loop: unrolling all K*K taps lets the scheduler hoist every weight load and halo read of the
    // tile ahead (about 170 registers at K=7, one block per SM; capped, it spills)
    REDNET_NO_UNROLL
    for (int kh = 0; kh < K; ++kh) {
      REDNET_UNROLL
      for (int column = 0; column < kColumns; ++column) {
        const Slice xs = LoadVec<Slice>(halo + kh * tap_row + column * tap_col + slice * CB);
        float xf[CB];
        REDNET_UNROLL
        for (int j = 0; j < CB; ++j) xf[j] = Element<T>::ToFloat(xs.v[j]);
        REDNET_UNROLL
        for (int q = 0; q < PW; ++q) {
          const int kw = column - q * S;  // a compile-time value once unrolled
          if (kw < 0 || kw >= K) continue;
          const int tap = kh * K + kw;
          float weight;
          if constexpr (L == Layout::kNHWC)
            weight = Element<T>::ToFloat(w_shared[tap * (Tile::kPixels + 1) + q * Tile::kCells]);
          else
            weight = Element<T>::ToFloat(w_pixel[tap * p.weight.c + w_offset[q]]);
          REDNET_UNROLL
          for (int j = 0; j < CB; ++j) acc[q][j] += weight * xf[j];
        }
      }
    }
    const int64_t c0 = o.g * cg + slice * CB;
    REDNET_UNROLL
    for (int q = 0; q < PW; ++q) {
      if (wo + q >= p.out_w) break;
      T* y_pixel = a.y + o.n * p.y.n + c0 * p.y.c + ho * p.y.h + (wo + q) * p.y.w;
      Slice out;
      REDNET_UNROLL
      for (int j = 0; j < CB; ++j)
        out.v[j] = Element<T>::FromFloat(ApplyEpilogue(acc[q][j], Element<T>::ToFloat(a.scale[c0 + j]),
                                                      Element<T>::ToFloat(a.shift[c0 + j]), p.activation));
      if constexpr (L == Layout::kNHWC) {
        StoreVec(y_pixel, out);
      } else {
        REDNET_UNROLL
        for (int j = 0; j < CB; ++j) y_pixel[j * p.y.c] = out.v[j];
      }
    }
  }
}

}  // namespace rednet
