"""``rednet::involution`` on CUDA: the project's CUDA kernel, the launcher the TensorRT plugin and the ONNX Runtime
CUDA op run, called through its C ABI (``rednet_involution_cuda`` in librednet_cuda_capi.so,
plugins/common/involution_capi.cpp) with ctypes, on torch's current stream of the tensors' device.

fp32 and fp16 (accumulated in fp32, the fused epilogue included) run the kernel, in NCHW or, for channel-last
inputs (a channels_last network), channel-last with a channels_last output; fp64 and bf16, which it does not
compute, run the strided PyTorch formulation. Where the library was not built (no nvcc at `make plugins`), the
op still runs, on the strided formulation, and says so once (a RuntimeWarning naming the build command): silently
slower would hide that the GPU path is not the kernel the deployment runs. The backward pass is the op's autograd
formula (rednet/ops/involution.py), which runs on any device.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from typing import Optional

import torch

KERNEL_DTYPES = (torch.float32, torch.float16)
ERROR_BYTES = 1024
NUM_ATTRIBUTES = 6  # kernel_size, stride, padding, dilation, groups, activation (the contract's order)

# rednet_involution_cuda(fp16, x, weight, scale, shift, y, attrs[6], x_dims[4], w_dims[4], channel_last, pitches[3],
#                        kernel, stream, error, error_size) -> 0, 1 (refused or failed) or DOES_NOT_FIT
DOES_NOT_FIT = 2
_I64_ATTRS, _I64_DIMS, _I64_PITCHES = ctypes.c_int64 * NUM_ATTRIBUTES, ctypes.c_int64 * 4, ctypes.c_int64 * 3
_I64_P = ctypes.POINTER(ctypes.c_int64)
PROTOTYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, *[ctypes.c_void_p] * 5, _I64_P, _I64_P, _I64_P, ctypes.c_int,
                             _I64_P, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class KernelDoesNotFit(RuntimeError):
    """The kernel asked for by name cannot run this problem (its table row's shape, channel or alignment rules)."""


def channel_pitch(t: torch.Tensor) -> int | None:
    """The channel pitch (elements between neighbouring pixels) of a channel-last tensor, [N][H][W][pitch] with
    channels contiguous (torch.channels_last has pitch C); None where the strides are not that layout. Strides of
    size-1 dimensions do not matter (torch leaves them arbitrary)."""
    n, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    pitch = sw if w > 1 else sh if h > 1 else sn if n > 1 else c
    laid_out = ((c == 1 or sc == 1) and pitch >= c and (h == 1 or sh == w * pitch)
                and (n == 1 or sn == h * w * pitch))
    return pitch if laid_out else None


class CudaInvolution:
    """The C ABI's marshalling: tensors in (device pointers, the contract's dims, the layout), an exception out."""

    def __init__(self, fn, names_fn=None):
        self.fn = fn
        self.names_fn = names_fn

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                 y: torch.Tensor, attrs, stream: int, kernel: Optional[str] = None) -> None:
        """y = the op on x, weight, y all NCHW-contiguous or else all channel-last (channel_pitch), scale and shift
        contiguous, one dtype. kernel: None for the launcher's choice, else one of `kernel_names()`. Raises
        KernelDoesNotFit where the named kernel cannot run the problem, RuntimeError with the library's message where
        it refuses (contract, layout, driver) or the launch fails."""
        channel_last = not all(t.is_contiguous() for t in (x, weight, y))
        pitches = [channel_pitch(t) for t in (x, weight, y)] if channel_last else [0, 0, 0]
        if None in pitches:
            raise ValueError(f"involution CUDA kernel: x, weight and y must all be NCHW-contiguous or all channel-last, "
                             f"got strides {x.stride()}, {weight.stride()}, {y.stride()}")
        error = ctypes.create_string_buffer(ERROR_BYTES)
        rc = self.fn(int(x.dtype == torch.float16), x.data_ptr(), weight.data_ptr(), scale.data_ptr(),
                     shift.data_ptr(), y.data_ptr(), _I64_ATTRS(*attrs), _I64_DIMS(*x.shape), _I64_DIMS(*weight.shape),
                     int(channel_last), _I64_PITCHES(*pitches) if channel_last else None,
                     kernel.encode() if kernel else None, stream, error, ERROR_BYTES)
        if rc != 0:
            message = f"rednet::involution CUDA kernel: {error.value.decode(errors='replace')}"
            raise KernelDoesNotFit(message) if rc == DOES_NOT_FIT else RuntimeError(message)

    def kernel_names(self) -> list[str]:
        """The kernels the library runs by name (the launcher's table)."""
        return self.names_fn().decode().split(",")


def load(path) -> CudaInvolution:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise RuntimeError(f"{path} does not load ({e}); rebuild it with `make plugins`") from e
    names = ctypes.CFUNCTYPE(ctypes.c_char_p)(("rednet_involution_cuda_kernels", lib))
    return CudaInvolution(PROTOTYPE(("rednet_involution_cuda", lib)), names)


@functools.cache
def cuda_kernel() -> CudaInvolution | None:
    """The C ABI of the built library (deploy.native finds it), or None where it was not built."""
    from deploy.native import find_library  # the one place that knows where native libraries live
    path = find_library("cuda_capi", required=False)
    return None if path is None else load(path)


def runs_channel_last(x: torch.Tensor, weight: torch.Tensor, device_type: str | None = None) -> bool:
    """Whether the op runs channel-last, with a channels_last y: channel-last x and weight (what a channels_last
    network's convolutions hand over) on the CUDA kernel, so no transposes surround the op. The CUDA implementation
    and the fake kernel (torch.compile sees y's strides) both ask this."""
    return ((device_type or x.device.type) == "cuda" and x.dtype in KERNEL_DTYPES and cuda_kernel() is not None
            and not (x.is_contiguous() and weight.is_contiguous())
            and all(channel_pitch(t) is not None for t in (x, weight)))


@functools.cache
def _warn_fallback() -> None:
    warnings.warn("rednet::involution on CUDA runs the strided PyTorch formulation: librednet_cuda_capi.so is not "
                  "built (`make plugins` on a machine with nvcc, or set REDNET_CUDA_CAPI_LIB)", RuntimeWarning,
                  stacklevel=3)


def involution_cuda(x: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride: int, padding: int,
                    dilation: int, groups: int, scale: Optional[torch.Tensor] = None,
                    shift: Optional[torch.Tensor] = None, activation: int = 0) -> torch.Tensor:
    """The op's CUDA implementation (registered for the CUDA dispatch key in rednet/ops/involution.py)."""
    from .involution import _check, involution_strided
    out_shape = _check(x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation)
    args = (x, weight, kernel_size, stride, padding, dilation, groups, scale, shift, activation)
    if x.dtype not in KERNEL_DTYPES:
        return involution_strided(*args)
    kernel = cuda_kernel()
    if kernel is None:
        _warn_fallback()
        return involution_strided(*args)
    channels = x.shape[1]
    scale = torch.ones(channels, dtype=x.dtype, device=x.device) if scale is None else scale.contiguous()
    shift = torch.zeros(channels, dtype=x.dtype, device=x.device) if shift is None else shift.contiguous()
    channel_last = runs_channel_last(x, weight, "cuda")  # this is the op's CUDA implementation
    if not channel_last:
        x, weight = x.contiguous(), weight.contiguous()
    y = torch.empty(out_shape, dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last if channel_last else torch.contiguous_format)
    # the library's CUDA runtime picks up the context torch makes current for the tensors' device
    with torch.cuda.device(x.device):
        kernel(x, weight, scale, shift, y, (kernel_size, stride, padding, dilation, groups, activation),
               torch.cuda.current_stream(x.device).cuda_stream)
    return y
