// The Involution op contract (spec/Involution.yaml) for the C++ backends: attribute rules, the shape rule, and
// error messages that name the bad value (the same wording as rednet/ops/spec.py). Header-only, no dependencies,
// so the ONNX Runtime op, the TensorRT plugin and the CUDA launcher all check one thing in one way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define REDNET_HD __host__ __device__ __forceinline__
#else
#define REDNET_HD inline
#endif

namespace rednet {

// The activation attribute's values.
enum : int64_t { kActivationNone = 0, kActivationRelu = 1 };

struct InvolutionAttrs {
  int64_t kernel_size = 0;
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;
  int64_t groups = 1;
  int64_t activation = kActivationNone;
};

// Inputs in contract order: x, weight, scale, shift.
inline constexpr int kNumInputs = 4;
inline constexpr const char* kInputNames[kNumInputs] = {"x", "weight", "scale", "shift"};

// The epilogue every kernel applies to the fp32 sum of channel c before storing it: the folded BatchNorm
// (scale[c], shift[c]) then the activation. ReLU lets NaN through, like ONNX Relu and torch.relu.
REDNET_HD float ApplyEpilogue(float acc, float scale, float shift, int64_t activation) {
  const float v = acc * scale + shift;
  return activation == kActivationRelu && v < 0.f ? 0.f : v;
}

// Everything a kernel needs to index x (N, C, H, W), weight (N, G*K*K, Ho, Wo) and y (N, C, Ho, Wo).
struct InvolutionShape {
  int64_t n = 0, c = 0, h = 0, w = 0, out_h = 0, out_w = 0;
};

inline constexpr size_t kNumAttributes = 6;
inline constexpr const char* kAttributeNames[kNumAttributes] = {"kernel_size", "stride",  "padding",
                                                                "dilation",    "groups", "activation"};
// activation may be omitted (it then means none); the others are required.
inline constexpr bool AttributeRequired(size_t i) { return i < 5; }

inline int64_t& AttributeField(InvolutionAttrs& a, size_t i) {
  int64_t* fields[kNumAttributes] = {&a.kernel_size, &a.stride, &a.padding, &a.dilation, &a.groups, &a.activation};
  return *fields[i];
}
// The spec's attribute maxima (0: no maximum).
inline constexpr int64_t kMaxKernelSize = 255, kMaxStride = 65535, kMaxPadding = 65535, kMaxDilation = 65535;

inline int64_t InvolutionOutputSize(int64_t size, const InvolutionAttrs& a) {
  const int64_t span = size + 2 * a.padding - a.dilation * (a.kernel_size - 1) - 1;
  // floor division (span may be negative when the input is too small)
  return (span >= 0 ? span / a.stride : -((-span + a.stride - 1) / a.stride)) + 1;
}

// Returns "" when the attributes satisfy the contract, else a message naming the offending value.
inline std::string CheckInvolutionAttrs(const InvolutionAttrs& a) {
  auto out_of_range = [](const char* name, int64_t v, int64_t min, int64_t max) -> std::string {
    const std::string value = "involution: " + std::string(name) + "=" + std::to_string(v);
    if (v < min) return value + " must be >= " + std::to_string(min);
    if (max > 0 && v > max) return value + " is outside the supported range (<= " + std::to_string(max) + ")";
    return {};
  };
  std::string err;
  if (!(err = out_of_range("kernel_size", a.kernel_size, 1, kMaxKernelSize)).empty()) return err;
  if (a.kernel_size % 2 == 0) return "involution: kernel_size=" + std::to_string(a.kernel_size) + " must be odd";
  if (!(err = out_of_range("stride", a.stride, 1, kMaxStride)).empty()) return err;
  if (!(err = out_of_range("padding", a.padding, 0, kMaxPadding)).empty()) return err;
  if (!(err = out_of_range("dilation", a.dilation, 1, kMaxDilation)).empty()) return err;
  if (!(err = out_of_range("groups", a.groups, 1, 0)).empty()) return err;
  if (a.activation != kActivationNone && a.activation != kActivationRelu)
    return "involution: activation=" + std::to_string(a.activation) + " is not one of 0 (none), 1 (relu)";
  return {};
}

inline std::string DimsToString(const int64_t* dims, size_t rank) {
  std::string s = "(";
  for (size_t i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (rank == 1 ? ",)" : ")");
}

// Validates the shapes of x, weight, scale and shift (the `dims`/`ranks` of the inputs in contract order); on
// success fills `shape` and returns "".
inline std::string CheckInvolutionShapes(const InvolutionAttrs& a, const int64_t* const dims[kNumInputs],
                                         const size_t ranks[kNumInputs], InvolutionShape* shape) {
  const int64_t *x_dims = dims[0], *w_dims = dims[1];
  const size_t x_rank = ranks[0], w_rank = ranks[1];
  std::string err = CheckInvolutionAttrs(a);
  if (!err.empty()) return err;
  if (x_rank != 4)
    return "involution: x must have rank 4 (N, C, H, W), got shape " + DimsToString(x_dims, x_rank);
  if (w_rank != 4)
    return "involution: weight must have rank 4 (N, G*K*K, Ho, Wo), got shape " + DimsToString(w_dims, w_rank);
  for (size_t i = 0; i < 4; ++i)
    if (x_dims[i] < 0 || (i > 0 && x_dims[i] == 0))
      return "involution: x shape " + DimsToString(x_dims, 4) + " has an empty or negative dimension";
  const int64_t n = x_dims[0], c = x_dims[1], h = x_dims[2], w = x_dims[3];
  if (c % a.groups != 0)
    return "involution: channels C=" + std::to_string(c) + " is not divisible by groups=" + std::to_string(a.groups);
  const int64_t ho = InvolutionOutputSize(h, a), wo = InvolutionOutputSize(w, a);
  if (ho < 1 || wo < 1)
    return "involution: input H×W=" + std::to_string(h) + "×" + std::to_string(w) +
           " is too small for kernel_size=" + std::to_string(a.kernel_size) + ", dilation=" +
           std::to_string(a.dilation) + ", padding=" + std::to_string(a.padding) + " (output would be " +
           std::to_string(ho) + "×" + std::to_string(wo) + ")";
  const int64_t expected[4] = {n, a.groups * a.kernel_size * a.kernel_size, ho, wo};
  for (size_t i = 0; i < 4; ++i)
    if (w_dims[i] != expected[i])
      return "involution: weight shape " + DimsToString(w_dims, 4) +
             " does not match the contract (N, groups*K*K, Ho, Wo) = " + DimsToString(expected, 4) +
             " for x shape " + DimsToString(x_dims, 4);
  for (int i = 2; i < kNumInputs; ++i)
    if (ranks[i] != 1 || dims[i][0] != c)
      return std::string("involution: ") + kInputNames[i] + " shape " + DimsToString(dims[i], ranks[i]) +
             " does not match the contract (C,) = (" + std::to_string(c) + ",) for x shape " + DimsToString(x_dims, 4);
  *shape = InvolutionShape{n, c, h, w, ho, wo};
  return {};
}

}  // namespace rednet
