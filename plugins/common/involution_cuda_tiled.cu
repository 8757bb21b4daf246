// The tiled CUDA involution kernels (involution_cuda_tiled.h holds their phases, the table and the design): one
// __global__ per (tile shape, storage type, layout), each the two phases around one barrier.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

#include "involution_cuda_tiled.h"

namespace rednet {
namespace {

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

}  // namespace

bool LaunchTiledInvolution(KernelId id, const InvolutionProblem& problem, int activation, const void* x,
                           const void* weight, const void* scale, const void* shift, void* y, cudaStream_t stream) {
  return VisitTiledKernel(id, [&](auto tile) {
    using Tile = decltype(tile);
    TiledParams p = MakeTiledParams(kTileConfigs[int(id)], problem);
    p.activation = activation;
    if (problem.element_bytes == 4) {
      LaunchTiled<Tile>(TiledArgs<float>{static_cast<const float*>(x), static_cast<const float*>(weight),
                                         static_cast<const float*>(scale), static_cast<const float*>(shift),
                                         static_cast<float*>(y), p},
                        problem.layout.order, stream);
    } else {
      LaunchTiled<Tile>(TiledArgs<__half>{static_cast<const __half*>(x), static_cast<const __half*>(weight),
                                          static_cast<const __half*>(scale), static_cast<const __half*>(shift),
                                          static_cast<__half*>(y), p},
                        problem.layout.order, stream);
    }
  });
}

}  // namespace rednet
