"""``rednet::involution`` — the involution op as a torch custom op (torch.library).

Contract (spec/Involution.yaml)::

    involution(x, weight, kernel_size, stride, padding, dilation, groups, scale=None, shift=None, activation=0) -> y
    x:      (N, C, H, W)
    weight: (N, G*K*K, Ho, Wo)   channel g*K*K + kh*K + kw — exactly the span-conv output
    scale, shift: (C,) or None   the fused epilogue (a folded BatchNorm); None means ones / zeros
    y:      (N, C, Ho, Wo),      Ho = floor((H + 2*padding - dilation*(K-1) - 1)/stride) + 1
    acc[n,c,ho,wo] = sum_{kh,kw} weight[n, g*K*K+kh*K+kw, ho, wo] * x[n, c, ho*stride+kh*dilation-padding, ...]
    y = act(scale[c] * acc + shift[c]),  act: 0 none, 1 ReLU;  g = c // (C/G), zero padding.

On the CPU in fp32/fp16 the op runs the project's C++ kernel (plugins/torch, on PyTorch's thread pool) when
`make plugins` has built it. Elsewhere, and as the fallback, it walks the K*K kernel taps and accumulates strided
views of the padded input, so memory grows with the output, never with K*K times the input (as unfold does).
fp16/bf16 are accumulated in fp32 either way, epilogue included. A fake kernel gives shapes to torch.export / torch.compile, and an autograd
formula makes the op trainable.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from .spec import check_shapes

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_NATIVE_CPU_DTYPES = (torch.float32, torch.float16)  # what the C++ kernel computes (fp32 accumulation)


RELU = 1  # the activation attribute's value for ReLU (spec: activation.values)


def _attrs(kernel_size, stride, padding, dilation, groups, activation=0) -> dict:
    return dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                activation=activation)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _tap_window(kh: int, kw: int, out_h: int, out_w: int, stride: int, dilation: int):
    """Index into the padded input that kernel tap (kh, kw) reads for every output pixel."""
    h0, w0 = kh * dilation, kw * dilation
    return (..., slice(h0, h0 + stride * (out_h - 1) + 1, stride), slice(w0, w0 + stride * (out_w - 1) + 1, stride))


def _check_dtypes(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
    for name, t in (("weight", weight), ("scale", scale), ("shift", shift)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"involution: x dtype {x.dtype} differs from {name} dtype {t.dtype}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"involution: dtype {x.dtype} is not a floating-point type")


def _check(x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation) -> tuple[int, ...]:
    out_shape = check_shapes(x.shape, weight.shape, _attrs(kernel_size, stride, padding, dilation, groups, activation),
                             None if scale is None else scale.shape, None if shift is None else shift.shape)
    _check_dtypes(x, weight, scale, shift)
    return out_shape


def apply_epilogue(acc: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
                   activation: int) -> torch.Tensor:
    """The contract's epilogue on an (N, C, Ho, Wo) sum, in the sum's (accumulation) dtype."""
    if scale is not None:
        acc = acc * scale.to(acc.dtype).view(1, -1, 1, 1)
    if shift is not None:
        acc = acc + shift.to(acc.dtype).view(1, -1, 1, 1)
    return torch.relu(acc) if activation == RELU else acc


def involution_strided(x: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride: int, padding: int,
                       dilation: int, groups: int, scale: Optional[torch.Tensor] = None,
                       shift: Optional[torch.Tensor] = None, activation: int = 0) -> torch.Tensor:
    """The op in plain PyTorch: K² multiply-adds of strided views of the padded input (no validation).

    The body of ``rednet::involution``; also what ``torch.compile`` can trace through and fuse (the custom op
    is opaque to it), so benchmarks compare against it as the best pure-PyTorch formulation.
    """
    n, c, h, w = x.shape
    out_h, out_w = weight.shape[2:]
    acc = _accumulation_dtype(x.dtype)
    k = kernel_size
    x_pad = F.pad(x.to(acc), (padding,) * 4).view(n, groups, c // groups, h + 2 * padding, w + 2 * padding)
    taps = weight.to(acc).view(n, groups, 1, k * k, out_h, out_w)
    out = torch.zeros((n, groups, c // groups, out_h, out_w), dtype=acc, device=x.device)
    for kh in range(k):
        for kw in range(k):
            out.addcmul_(x_pad[_tap_window(kh, kw, out_h, out_w, stride, dilation)], taps[:, :, :, kh * k + kw])
    return apply_epilogue(out.view(n, c, out_h, out_w), scale, shift, activation).to(x.dtype)


@functools.cache
def native_cpu_kernel() -> Callable | None:
    """``rednet_native::involution_cpu`` (the shared C++ kernel on PyTorch's thread pool) once its library, built by
    `make plugins`, is loaded; None where it was not built, and then the strided formulation runs instead."""
    from deploy.native import find_library  # the one place that knows where native libraries live
    path = find_library("torch_ops", required=False)
    if path is None:
        return None
    try:
        torch.ops.load_library(str(path))
    except OSError as e:
        raise RuntimeError(f"{path} does not load into torch {torch.__version__} ({e}); rebuild it with "
                           f"`make plugins`") from e
    return torch.ops.rednet_native.involution_cpu


@torch.library.custom_op("rednet::involution", mutates_args=())
def involution(x: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride: int, padding: int,
               dilation: int, groups: int, scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
               activation: int = 0) -> torch.Tensor:
    """Apply involution (see module docstring for the contract). Raises ValueError on bad input."""
    _check(x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation)
    args = (x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation)
    if x.device.type == "cpu" and x.dtype in _NATIVE_CPU_DTYPES and native_cpu_kernel() is not None:
        return native_cpu_kernel()(*args)
    return involution_strided(*args)


@involution.register_fake
def _(x, weight, kernel_size, stride, padding, dilation, groups, scale=None, shift=None, activation=0):
    return x.new_empty(_check(x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation))


def _involution_backward(grad_out, x, weight, kernel_size, stride, padding, dilation, groups, scale, shift,
                         activation):
    """Gradients of x, weight, scale, shift: the epilogue's chain rule on the recomputed sum, then the taps'."""
    n, c, h, w = x.shape
    out_h, out_w = grad_out.shape[2:]
    acc = _accumulation_dtype(x.dtype)
    k, cg = kernel_size, c // groups
    go = grad_out.to(acc)
    grad_scale = grad_shift = None
    if scale is not None or shift is not None or activation == RELU:
        pre_epilogue = involution_strided(x.to(acc), weight.to(acc), kernel_size, stride, padding, dilation, groups)
        if activation == RELU:
            go = go * (apply_epilogue(pre_epilogue, scale, shift, 0) > 0)
        if shift is not None:
            grad_shift = go.sum(dim=(0, 2, 3)).to(shift.dtype)
        if scale is not None:
            grad_scale = (go * pre_epilogue).sum(dim=(0, 2, 3)).to(scale.dtype)
            go = go * scale.to(acc).view(1, -1, 1, 1)
    go = go.reshape(n, groups, cg, out_h, out_w)
    x_pad = F.pad(x.to(acc), (padding,) * 4).view(n, groups, cg, h + 2 * padding, w + 2 * padding)
    taps = weight.to(acc).view(n, groups, 1, k * k, out_h, out_w)
    grad_x_pad = torch.zeros_like(x_pad)
    grad_taps = torch.empty((n, groups, k * k, out_h, out_w), dtype=acc, device=x.device)
    for kh in range(k):
        for kw in range(k):
            window = _tap_window(kh, kw, out_h, out_w, stride, dilation)
            grad_taps[:, :, kh * k + kw] = (go * x_pad[window]).sum(dim=2)
            grad_x_pad[window] += go * taps[:, :, :, kh * k + kw]
    grad_x = grad_x_pad[..., padding:padding + h, padding:padding + w].reshape(n, c, h, w)
    return grad_x.to(x.dtype), grad_taps.view(weight.shape).to(weight.dtype), grad_scale, grad_shift


def _setup_context(ctx, inputs, output):
    x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation = inputs
    ctx.save_for_backward(x, weight, scale, shift)
    ctx.attrs = (kernel_size, stride, padding, dilation, groups)
    ctx.activation = activation


def _backward(ctx, grad_out):
    x, weight, scale, shift = ctx.saved_tensors
    grad_x, grad_weight, grad_scale, grad_shift = _involution_backward(grad_out, x, weight, *ctx.attrs, scale, shift,
                                                                       ctx.activation)
    return grad_x, grad_weight, None, None, None, None, None, grad_scale, grad_shift, None


involution.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.rednet.involution)
def _involution_flops(x_shape, weight_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    """2 FLOPs (one multiply-add) per output element per kernel tap, the convention of aten.convolution."""
    n, c, out_h, out_w = out_shape
    return 2 * n * c * out_h * out_w * kernel_size * kernel_size
