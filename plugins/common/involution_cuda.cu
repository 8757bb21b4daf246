// CUDA involution: the launcher and its kernels. ChooseInvolutionKernel (involution_cuda_tiled.h, its table and
// design) picks per shape:
// - a tiled kernel for RedNet's shapes (K 3/7, stride 1/2): one block per (n, group, output tile), the halo in
//   shared memory, a thread's channel slice in registers;
// - else the per-pixel kernel (involution_cuda_pixel.h): one thread per output pixel (n, g, ho, wo) of a group,
//   each tap's weight loaded once and applied to a block of the group's channels held in registers; any
//   attributes, 64-bit indices, a grid-stride loop covers any size.
// Accumulation is fp32 for fp16 I/O; both layouts (NCHW, channel-last with pitches) in every kernel.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <type_traits>

#include "involution_cuda.h"
#include "involution_cuda_pixel.h"
#include "involution_cuda_tiled.h"

namespace rednet {
namespace {

constexpr int kThreads = 256;

struct LoadHalf {
  __device__ float operator()(const __half* p) const { return __half2float(__ldg(p)); }
};
struct LoadFloat {
  __device__ float operator()(const float* p) const { return __ldg(p); }
};
struct StoreHalf {
  __device__ void operator()(__half* p, float v) const { *p = __float2half_rn(v); }
};
struct StoreFloat {
  __device__ void operator()(float* p, float v) const { *p = v; }
};

// At least two blocks per SM: ptxas may then use up to 128 registers, room for the 16 fp32 accumulators and the
// addressing; with the thread bound alone it chose 64 for fp16 on sm_86/89 and spilled.
template <typename T, typename Load, typename Store>
__global__ void __launch_bounds__(kThreads, 2)
    InvolutionKernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ scale,
                     const T* __restrict__ shift, T* __restrict__ y, InvolutionParams p) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < p.total;
       idx += int64_t(gridDim.x) * blockDim.x)
    InvolutionPixel(x, weight, scale, shift, y, p, idx, Load{}, Store{});
}

// The tiled kernels: stage, barrier, compute and store (the phases the host tests run).
template <class Tile, typename T, Layout L>
__global__ void __launch_bounds__(kMaxTiledThreads, kMinTiledBlocksPerSm) InvolutionTiledKernel(TiledArgs<T> args) {
  extern __shared__ __align__(16) unsigned char shared[];
  StageTile<Tile, T, L>(args, blockIdx.x, int(threadIdx.x), shared);
  __syncthreads();
  ComputeAndStoreTile<Tile, T, L>(args, blockIdx.x, int(threadIdx.x), shared);
}

template <class Tile, typename T>
void LaunchTiled(const TiledArgs<T>& args, Layout layout, cudaStream_t stream) {
  const TiledParams& p = args.p;
  if (layout == Layout::kNCHW)
    InvolutionTiledKernel<Tile, T, Layout::kNCHW><<<unsigned(p.blocks), p.threads, p.shared_bytes, stream>>>(args);
  else
    InvolutionTiledKernel<Tile, T, Layout::kNHWC><<<unsigned(p.blocks), p.threads, p.shared_bytes, stream>>>(args);
}

template <typename T>
void Launch(KernelId id, const InvolutionProblem& problem, const void* x, const void* weight, const void* scale, const void* shift,
            void* y, cudaStream_t stream) {
  const auto* x_t = static_cast<const T*>(x);
  const auto* weight_t = static_cast<const T*>(weight);
  const auto* scale_t = static_cast<const T*>(scale);
  const auto* shift_t = static_cast<const T*>(shift);
  auto* y_t = static_cast<T*>(y);
  const bool tiled = VisitTiledKernel(id, [&](auto tile) {
    LaunchTiled<decltype(tile)>(
        TiledArgs<T>{x_t, weight_t, scale_t, shift_t, y_t, MakeTiledParams(kTileConfigs[int(id)], problem)},
        problem.layout.order, stream);
  });
  if (tiled) return;
  const InvolutionParams p = MakeInvolutionParams(problem.attrs, problem.shape, problem.layout);
  const int64_t blocks = std::min<int64_t>((p.total + kThreads - 1) / kThreads, int64_t(1) << 24);
  if constexpr (std::is_same_v<T, float>)
    InvolutionKernel<float, LoadFloat, StoreFloat>
        <<<unsigned(blocks), kThreads, 0, stream>>>(x_t, weight_t, scale_t, shift_t, y_t, p);
  else
    InvolutionKernel<__half, LoadHalf, StoreHalf>
        <<<unsigned(blocks), kThreads, 0, stream>>>(x_t, weight_t, scale_t, shift_t, y_t, p);
}

bool VectorAligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0; }

}  // namespace

std::string LaunchInvolution(ElementType type, const void* x, const void* weight, const void* scale, const void* shift,
                             void* y, const InvolutionAttrs& a, const InvolutionShape& s, cudaStream_t stream,
                             const TensorLayout& layout, std::optional<KernelId> kernel) {
  std::string err = CheckInvolutionAttrs(a);
  if (err.empty()) err = CheckTensorLayout(layout, a, s);
  if (!err.empty()) return err;
  if (s.n * s.c * s.out_h * s.out_w == 0) return {};
  if (x == nullptr || weight == nullptr || scale == nullptr || shift == nullptr || y == nullptr)
    return "involution: null device pointer";
  const InvolutionProblem problem{type == ElementType::kFloat32 ? 4 : 2, layout, a, s,
                                  VectorAligned(x) && VectorAligned(y)};
  const KernelId id = kernel.value_or(ChooseInvolutionKernel(problem));
  if (int(id) < 0 || int(id) >= int(std::size(kKernelNames)))
    return "involution: no kernel " + std::to_string(int(id));
  if (!InvolutionKernelFits(id, problem)) {
    const int64_t x_dims[4] = {s.n, s.c, s.h, s.w};
    return std::string("involution: kernel ") + kKernelNames[int(id)] + " cannot run kernel_size=" +
           std::to_string(a.kernel_size) + ", stride=" + std::to_string(a.stride) + " on x " +
           DimsToString(x_dims, 4) + " in this type and layout";
  }
  if (type == ElementType::kFloat32)
    Launch<float>(id, problem, x, weight, scale, shift, y, stream);
  else
    Launch<__half>(id, problem, x, weight, scale, shift, y, stream);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? std::string() : std::string("involution: CUDA launch failed: ") + cudaGetErrorString(status);
}

}  // namespace rednet
