#include "InvolutionOp.h"

#include <cstdint>
#include <type_traits>

#include "involution_cpu.h"
#ifdef REDNET_WITH_CUDA
#include "involution_cuda.h"
#endif

namespace rednet::ort {

InvolutionKernelBase::InvolutionKernelBase(const OrtApi*, const OrtKernelInfo* info) noexcept {
  try {
    Ort::ConstKernelInfo kernel_info(info);
    for (size_t i = 0; i < kNumAttributes; ++i) {
      const char* name = kAttributeNames[i];
      try {
        AttributeField(attrs_, i) = kernel_info.GetAttribute<int64_t>(name);
      } catch (const Ort::Exception&) {
        if (!AttributeRequired(i)) continue;  // keeps the default
        error_ = std::string("involution: missing or non-int attribute '") + name + "'";
        return;
      }
    }
    error_ = CheckInvolutionAttrs(attrs_);
  } catch (const std::exception& e) {
    error_ = std::string("involution: cannot read node attributes: ") + e.what();
  }
}

template <typename T>
Ort::Status InvolutionKernelBase::CheckInputs(const Ort::Custom::Tensor<T>& x, const Ort::Custom::Tensor<T>& weight,
                                              OptionalInput<T> scale, OptionalInput<T> shift,
                                              InvolutionShape* shape) const {
  if (!error_.empty()) return Ort::Status(error_.c_str(), ORT_INVALID_ARGUMENT);
  if (!scale || !shift)
    return Ort::Status("involution: the node has no scale/shift inputs; the contract needs 4 inputs (x, weight, "
                       "scale, shift): a model exported before the fused epilogue must be exported again",
                       ORT_INVALID_ARGUMENT);
  const std::vector<int64_t> shapes[kNumInputs] = {x.Shape(), weight.Shape(), (*scale)->Shape(), (*shift)->Shape()};
  const int64_t* dims[kNumInputs];
  size_t ranks[kNumInputs];
  for (int i = 0; i < kNumInputs; ++i) {
    dims[i] = shapes[i].data();
    ranks[i] = shapes[i].size();
  }
  const std::string err = CheckInvolutionShapes(attrs_, dims, ranks, shape);
  return err.empty() ? Ort::Status(nullptr) : Ort::Status(err.c_str(), ORT_INVALID_ARGUMENT);
}

namespace {

template <typename T>
struct CpuJob {
  const T* x;
  const T* weight;
  const T* scale;
  const T* shift;
  T* y;
  InvolutionAttrs attrs;
  InvolutionShape shape;

  static void Run(void* data, size_t item) {
    const auto* job = static_cast<const CpuJob*>(data);
    const auto i = static_cast<int64_t>(item);
    if constexpr (std::is_same_v<T, float>) {
      InvolutionCpuF32(job->x, job->weight, job->scale, job->shift, job->y, job->attrs, job->shape, i, i + 1);
    } else {
      const auto bits = [](const T* p) { return reinterpret_cast<const uint16_t*>(p); };
      InvolutionCpuF16(bits(job->x), bits(job->weight), bits(job->scale), bits(job->shift),
                       reinterpret_cast<uint16_t*>(job->y), job->attrs, job->shape, i, i + 1);
    }
  }
};

}  // namespace

template <typename T>
Ort::Status InvolutionCpu<T>::Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                                      const Ort::Custom::Tensor<T>& weight, OptionalInput<T> scale,
                                      OptionalInput<T> shift, Ort::Custom::Tensor<T>& y) {
  static_assert(sizeof(T) == sizeof(float) || sizeof(T) == sizeof(uint16_t));
  try {
    InvolutionShape shape;
    if (Ort::Status status = CheckInputs(x, weight, scale, shift, &shape); !status.IsOK()) return status;
    T* out = y.Allocate({shape.n, shape.c, shape.out_h, shape.out_w});
    const int64_t items = InvolutionCpuWorkItems(attrs_, shape);
    if (items == 0) return Ort::Status(nullptr);
    CpuJob<T> job{x.Data(), weight.Data(), (*scale)->Data(), (*shift)->Data(), out, attrs_, shape};
    Ort::KernelContext(context).ParallelFor(&CpuJob<T>::Run, static_cast<size_t>(items), 0, &job);
    return Ort::Status(nullptr);
  } catch (const std::exception& e) {
    return Ort::Status(e);
  }
}

template class InvolutionCpu<float>;
template class InvolutionCpu<Ort::Float16_t>;

#ifdef REDNET_WITH_CUDA
template <typename T>
Ort::Status InvolutionCuda<T>::Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                                       const Ort::Custom::Tensor<T>& weight, OptionalInput<T> scale,
                                       OptionalInput<T> shift, Ort::Custom::Tensor<T>& y) {
  try {
    InvolutionShape shape;
    if (Ort::Status status = CheckInputs(x, weight, scale, shift, &shape); !status.IsOK()) return status;
    T* out = y.Allocate({shape.n, shape.c, shape.out_h, shape.out_w});
    auto stream = static_cast<cudaStream_t>(Ort::KernelContext(context).GetGPUComputeStream());
    const ElementType type = std::is_same_v<T, float> ? ElementType::kFloat32 : ElementType::kFloat16;
    const std::string err =
        LaunchInvolution(type, x.Data(), weight.Data(), (*scale)->Data(), (*shift)->Data(), out, attrs_, shape, stream);
    return err.empty() ? Ort::Status(nullptr) : Ort::Status(err.c_str(), ORT_RUNTIME_EXCEPTION);
  } catch (const std::exception& e) {
    return Ort::Status(e);
  }
}

template class InvolutionCuda<float>;
template class InvolutionCuda<Ort::Float16_t>;
#endif

}  // namespace rednet::ort
