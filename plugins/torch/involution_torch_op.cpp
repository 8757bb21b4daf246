// rednet_native::involution_cpu: the shared CPU kernel (common/involution_cpu.h) behind the PyTorch op
// rednet::involution, which calls it for CPU float32/float16 tensors once this library is loaded. Work items run
// on PyTorch's intra-op pool (at::parallel_for), so torch.set_num_threads governs it like any ATen op.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string>

#include "involution_contract.h"
#include "involution_cpu.h"

namespace rednet {
namespace {

// scale/shift default to ones/zeros (no fused BatchNorm).
at::Tensor InvolutionCpu(const at::Tensor& x, const at::Tensor& weight, int64_t kernel_size, int64_t stride,
                         int64_t padding, int64_t dilation, int64_t groups, const std::optional<at::Tensor>& scale,
                         const std::optional<at::Tensor>& shift, int64_t activation) {
  const InvolutionAttrs attrs{kernel_size, stride, padding, dilation, groups, activation};
  TORCH_CHECK_VALUE(x.device().is_cpu() && weight.device().is_cpu(), "involution_cpu: x on ", x.device(),
                    " and weight on ", weight.device(), " must both be CPU tensors");
  TORCH_CHECK_VALUE(x.scalar_type() == weight.scalar_type(), "involution: x dtype ", x.scalar_type(),
                    " differs from weight dtype ", weight.scalar_type());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf, "involution_cpu: dtype ",
                    x.scalar_type(), " is not float32 or float16");
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  const int64_t channels = x.dim() > 1 ? x.size(1) : 0;
  const at::Tensor sc = scale ? scale->contiguous() : at::ones({channels}, x.options());
  const at::Tensor sh = shift ? shift->contiguous() : at::zeros({channels}, x.options());
  for (const at::Tensor* t : {&sc, &sh})
    TORCH_CHECK_VALUE(t->device().is_cpu() && t->scalar_type() == x.scalar_type(), "involution: scale/shift (",
                      t->scalar_type(), " on ", t->device(), ") must be CPU tensors of x's dtype ", x.scalar_type());
  const at::Tensor* inputs[kNumInputs] = {&xc, &wc, &sc, &sh};
  const int64_t* dims[kNumInputs];
  size_t ranks[kNumInputs];
  for (int i = 0; i < kNumInputs; ++i) {
    dims[i] = inputs[i]->sizes().data();
    ranks[i] = size_t(inputs[i]->dim());
  }
  InvolutionShape shape;
  const std::string err = CheckInvolutionShapes(attrs, dims, ranks, &shape);
  TORCH_CHECK_VALUE(err.empty(), err);
  at::Tensor y = at::empty({shape.n, shape.c, shape.out_h, shape.out_w}, xc.options());
  if (y.numel() == 0) return y;
  at::parallel_for(0, InvolutionCpuWorkItems(attrs, shape), 1, [&](int64_t begin, int64_t end) {
    if (xc.scalar_type() == at::kFloat) {
      InvolutionCpuF32(xc.const_data_ptr<float>(), wc.const_data_ptr<float>(), sc.const_data_ptr<float>(),
                       sh.const_data_ptr<float>(), y.data_ptr<float>(), attrs, shape, begin, end);
    } else {  // IEEE binary16 either way: at::Half is its bits
      const auto bits = [](const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::Half>()); };
      InvolutionCpuF16(bits(xc), bits(wc), bits(sc), bits(sh), reinterpret_cast<uint16_t*>(y.data_ptr<at::Half>()),
                       attrs, shape, begin, end);
    }
  });
  return y;
}

}  // namespace
}  // namespace rednet

TORCH_LIBRARY(rednet_native, m) {
  m.def("involution_cpu(Tensor x, Tensor weight, int kernel_size, int stride, int padding, int dilation, "
        "int groups, Tensor? scale=None, Tensor? shift=None, int activation=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(rednet_native, CPU, m) { m.impl("involution_cpu", &rednet::InvolutionCpu); }
