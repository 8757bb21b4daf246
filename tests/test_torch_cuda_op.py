"""rednet::involution's CUDA implementation (rednet/ops/cuda.py), the parts a machine without a GPU can check: its
registration for the CUDA dispatch key, the marshalling into the C ABI (a fake C function of the same prototype
receives every argument), error propagation, non-contiguous inputs, the fallback, and the real library's prototype
(called with host buffers, it answers with its contract and driver checks before touching them). The kernel's
numbers on a GPU come from `make gpu-check`."""
import contextlib
import ctypes
import types

import pytest
import torch

from deploy import native
from helpers import random_inputs, requires
from rednet.ops import cuda, involution, involution_strided

CASE = (2, 32, 9, 11, 7, 2, 3, 1, 4)  # N, C, H, W, kernel_size, stride, padding, dilation, groups
STREAM = 0x5EED5


class FakeLibrary:
    """A C function of rednet_involution_cuda's prototype that records its arguments, reads the inputs through the
    pointers it gets, and writes the strided formulation's result through y's pointer (or fails with a message)."""

    def __init__(self, fail_with: str | None = None):
        self.calls = []
        self.fail_with = fail_with
        self.fn = cuda.PROTOTYPE(self._call)

    @staticmethod
    def _read(ptr, shape, dtype, pitch=0):
        """The tensor at ptr: NCHW (pitch 0) or [N][H][W][pitch], as NCHW values."""
        n, c, h, w = shape if len(shape) == 4 else (1, shape[0], 1, 1)
        stored = (n, h, w, pitch) if pitch else (n, c, h, w)
        count = int(torch.Size(stored).numel())
        raw = ctypes.string_at(ptr, count * torch.empty(0, dtype=dtype).element_size())
        t = torch.frombuffer(bytearray(raw), dtype=dtype).view(stored).clone()
        return (t[..., :c].permute(0, 3, 1, 2) if pitch else t).reshape(shape)

    def _call(self, fp16, x, weight, scale, shift, y, attrs, x_dims, w_dims, channel_last, pitches, kernel, stream,
              error, error_size):
        call = dict(fp16=fp16, ptrs=(x, weight, scale, shift, y), attrs=[attrs[i] for i in range(6)],
                    x_dims=[x_dims[i] for i in range(4)], w_dims=[w_dims[i] for i in range(4)],
                    channel_last=channel_last, pitches=[pitches[i] for i in range(3)] if pitches else None,
                    kernel=kernel, stream=stream)
        self.calls.append(call)
        if self.fail_with is not None:
            ctypes.memmove(error, self.fail_with.encode() + b"\0", min(len(self.fail_with) + 1, error_size))
            return 1
        dtype = torch.float16 if fp16 else torch.float32
        c = call["x_dims"][1]
        x_pitch, w_pitch, y_pitch = call["pitches"] or (0, 0, 0)
        call["x"] = self._read(x, call["x_dims"], dtype, x_pitch)
        call["weight"] = self._read(weight, call["w_dims"], dtype, w_pitch)
        call["scale"], call["shift"] = self._read(scale, [c], dtype), self._read(shift, [c], dtype)
        k, s, p, d, g, act = call["attrs"]
        out = involution_strided(call["x"], call["weight"], k, s, p, d, g, call["scale"], call["shift"], act)
        if y_pitch:
            assert y_pitch == c, "the op allocates y channels_last (pitch C)"
            out = out.permute(0, 2, 3, 1)
        out = out.contiguous()
        ctypes.memmove(y, out.data_ptr(), out.nbytes)
        return 0


@pytest.fixture
def fake_device(monkeypatch):
    """CPU tensors stand in for device tensors: torch's device guard and current stream become fakes."""
    seen = {}

    def current_stream(device=None):
        seen["stream_device"] = device
        return types.SimpleNamespace(cuda_stream=STREAM)

    def device_guard(device):
        seen["guard_device"] = device
        return contextlib.nullcontext()

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "device", device_guard)
    return seen


def use(monkeypatch, kernel):
    monkeypatch.setattr(cuda, "cuda_kernel", lambda: kernel)


def test_registered_for_the_cuda_dispatch_key(monkeypatch, fake_device):
    assert torch._C._dispatch_has_kernel_for_dispatch_key("rednet::involution", "CUDA")
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    x, weight = random_inputs(*CASE)
    involution._backend_fns["cuda"](x, weight, *CASE[4:])  # what the dispatcher runs for CUDA tensors
    assert len(lib.calls) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("epilogue", [False, True])
def test_every_argument_reaches_the_c_abi(monkeypatch, fake_device, dtype, epilogue):
    n, c, h, w, k, s, p, d, g = CASE
    x, weight = random_inputs(*CASE, dtype=dtype)
    scale = (torch.rand(c) + 0.5).to(dtype) if epilogue else None
    shift = torch.randn(c).to(dtype) if epilogue else None
    activation = 1 if epilogue else 0
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    y = cuda.involution_cuda(x, weight, k, s, p, d, g, scale, shift, activation)
    (call,) = lib.calls
    assert call["fp16"] == (dtype == torch.float16)
    assert call["attrs"] == [k, s, p, d, g, activation]
    assert call["x_dims"] == [n, c, h, w] and call["w_dims"] == list(weight.shape)
    assert call["channel_last"] == 0 and call["pitches"] is None and call["kernel"] is None  # NCHW, launcher's choice
    assert call["stream"] == STREAM and fake_device["stream_device"] == x.device == fake_device["guard_device"]
    assert torch.equal(call["x"], x) and torch.equal(call["weight"], weight)
    assert torch.equal(call["scale"], scale if epilogue else torch.ones(c, dtype=dtype))  # None: ones / zeros
    assert torch.equal(call["shift"], shift if epilogue else torch.zeros(c, dtype=dtype))
    assert call["ptrs"][4] == y.data_ptr() and y.dtype == dtype and y.shape == (n, c, 5, 6)
    torch.testing.assert_close(y, involution_strided(x, weight, k, s, p, d, g, scale, shift, activation))


def test_non_contiguous_inputs_arrive_contiguous(monkeypatch, fake_device):
    n, c, h, w, k, s, p, d, g = CASE
    x, weight = random_inputs(*CASE, dtype=torch.float32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    weight_t = weight.transpose(2, 3).contiguous().transpose(2, 3)
    scale = torch.rand(2 * c)[::2]  # strided
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    y = cuda.involution_cuda(x_cl, weight_t, k, s, p, d, g, scale, None, 0)
    (call,) = lib.calls
    assert torch.equal(call["x"], x) and torch.equal(call["weight"], weight) and torch.equal(call["scale"], scale)
    torch.testing.assert_close(y, involution_strided(x, weight, k, s, p, d, g, scale))


def test_channel_last_tensors_go_with_their_pitches():
    """torch.channels_last is [N][H][W][C]; a channel slice of a wider channel-last tensor keeps the wider pitch,
    as TensorRT's kHWC8 pads C to a multiple of 8."""
    n, c, h, w, k, s, p, d, g = CASE
    x, weight = random_inputs(*CASE, dtype=torch.float16)
    wide = torch.zeros(n, c + 8, h, w, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    wide[:, :c] = x
    x_padded = wide[:, :c]
    weight_cl = weight.contiguous(memory_format=torch.channels_last)
    y = torch.empty(n, c, 5, 6, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    lib = FakeLibrary(fail_with="recorded")
    kernel = cuda.CudaInvolution(lib.fn)
    with pytest.raises(RuntimeError, match="recorded"):
        kernel(x_padded, weight_cl, torch.ones(c), torch.zeros(c), y, CASE[4:] + (0,), STREAM, kernel="PerPixel")
    (call,) = lib.calls
    assert call["channel_last"] == 1 and call["pitches"] == [c + 8, g * k * k, c] and call["kernel"] == b"PerPixel"
    assert call["x_dims"] == [n, c, h, w] and call["ptrs"][0] == x_padded.data_ptr()
    with pytest.raises(ValueError, match="NCHW-contiguous or all channel-last"):
        kernel(x_padded, weight, torch.ones(c), torch.zeros(c), y, CASE[4:] + (0,), STREAM)
    with pytest.raises(ValueError, match="NCHW-contiguous or all channel-last"):
        kernel(x.transpose(2, 3), weight, torch.ones(c), torch.zeros(c), y, CASE[4:] + (0,), STREAM)
    assert len(lib.calls) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channels_last_inputs_run_channel_last_with_a_channels_last_output(monkeypatch, fake_device, dtype):
    n, c, h, w, k, s, p, d, g = CASE
    x, weight = random_inputs(*CASE, dtype=dtype)
    scale, shift = torch.rand(c).to(dtype) + 0.5, torch.randn(c).to(dtype)
    x_cl, weight_cl = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    y = cuda.involution_cuda(x_cl, weight_cl, k, s, p, d, g, scale, shift, 1)
    (call,) = lib.calls
    assert call["channel_last"] == 1 and call["pitches"] == [c, g * k * k, c]
    assert call["ptrs"][0] == x_cl.data_ptr() and call["ptrs"][1] == weight_cl.data_ptr()  # no copies
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, involution_strided(x, weight, k, s, p, d, g, scale, shift, 1))
    # the fake kernel (what torch.compile plans with) gives the same strides on CUDA, NCHW on the CPU
    assert cuda.runs_channel_last(x_cl, weight_cl, "cuda") and not cuda.runs_channel_last(x_cl, weight_cl)
    assert not cuda.runs_channel_last(x_cl, weight, "cuda")  # mixed layouts run NCHW
    assert not cuda.runs_channel_last(x_cl.double(), weight_cl.double(), "cuda")  # fp64: the strided formulation


def test_channel_pitch():
    t = torch.empty(2, 8, 5, 6)
    assert cuda.channel_pitch(t.contiguous(memory_format=torch.channels_last)) == 8
    assert cuda.channel_pitch(torch.empty(2, 5, 6, 12).permute(0, 3, 1, 2)[:, :8]) == 12  # padded, like kHWC8
    assert cuda.channel_pitch(t) is None and cuda.channel_pitch(t.transpose(2, 3)) is None
    assert cuda.channel_pitch(torch.empty(2, 8, 1, 1)) == 8  # size-1 dimensions: their strides do not matter
    assert cuda.channel_pitch(torch.empty(1, 1, 5, 6)) == 1


def test_a_refusal_becomes_a_runtime_error_with_the_message(monkeypatch, fake_device):
    x, weight = random_inputs(*CASE, dtype=torch.float16)
    use(monkeypatch, cuda.CudaInvolution(FakeLibrary(fail_with="involution: CUDA launch failed: too many resources").fn))
    with pytest.raises(RuntimeError, match="too many resources"):
        cuda.involution_cuda(x, weight, *CASE[4:])


def test_contract_violations_never_reach_the_library(monkeypatch, fake_device):
    x, weight = random_inputs(*CASE, dtype=torch.float32)
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    with pytest.raises(ValueError, match="kernel_size=4"):
        cuda.involution_cuda(x, weight, 4, *CASE[5:])
    with pytest.raises(ValueError, match="scale"):
        cuda.involution_cuda(x, weight, *CASE[4:], torch.ones(3))
    assert lib.calls == []


def test_without_the_library_the_strided_formulation_runs_and_says_so(monkeypatch, fake_device):
    x, weight = random_inputs(*CASE, dtype=torch.float32)
    use(monkeypatch, None)
    cuda._warn_fallback.cache_clear()
    with pytest.warns(RuntimeWarning, match="librednet_cuda_capi.so is not built"):
        y = cuda.involution_cuda(x, weight, *CASE[4:], None, torch.ones(32), 1)
    torch.testing.assert_close(y, involution_strided(x, weight, *CASE[4:], None, torch.ones(32), 1))


def test_dtypes_the_kernel_does_not_compute_run_the_strided_formulation(monkeypatch, fake_device):
    lib = FakeLibrary()
    use(monkeypatch, cuda.CudaInvolution(lib.fn))
    for dtype in (torch.float64, torch.bfloat16):
        x, weight = random_inputs(*CASE, dtype=dtype)
        torch.testing.assert_close(cuda.involution_cuda(x, weight, *CASE[4:]), involution_strided(x, weight, *CASE[4:]))
    assert lib.calls == []


@requires("cuda_capi")
def test_the_built_library_has_this_prototype():
    """The real entry point, given host buffers: its answers prove each argument lands where the C side reads it
    (attrs, dims, the channel-last flag, the kernel name), and a complete valid call stops at the driver check
    here, before any buffer is touched."""
    kernel = cuda.load(native.find_library("cuda_capi"))
    x, weight = random_inputs(*CASE, dtype=torch.float32)
    c = CASE[1]
    scale, shift, y = torch.ones(c), torch.zeros(c), torch.empty(2, c, 5, 6)
    attrs = list(CASE[4:]) + [1]
    with pytest.raises(RuntimeError, match="kernel_size=4 must be odd"):
        kernel(x, weight, scale, shift, y, [4] + attrs[1:], STREAM)
    with pytest.raises(RuntimeError, match="activation=2"):
        kernel(x, weight, scale, shift, y, attrs[:5] + [2], STREAM)
    with pytest.raises(RuntimeError, match=r"weight shape \(2, 196, 5, 5\)"):
        kernel(x, weight[..., :5].contiguous(), scale, shift, y, attrs, STREAM)
    names = kernel.kernel_names()
    assert names[0] == "PerPixel" and {"K3S1", "K7S1", "K7S2"} <= set(names)
    with pytest.raises(RuntimeError, match="unknown CUDA kernel 'Fastest' \\(kernels: PerPixel,K3S1"):
        kernel(x, weight, scale, shift, y, attrs, STREAM, kernel="Fastest")
    with pytest.raises(cuda.KernelDoesNotFit, match="kernel K3S1 does not fit kernel_size=7, stride=2"):
        kernel(x, weight, scale, shift, y, attrs, STREAM, kernel="K3S1")
    i64 = ctypes.c_int64
    raw = (0, x.data_ptr(), weight.data_ptr(), scale.data_ptr(), shift.data_ptr(), y.data_ptr(),
           (i64 * 6)(*attrs), (i64 * 4)(*x.shape), (i64 * 4)(*weight.shape))
    error = ctypes.create_string_buffer(256)
    assert kernel.fn(*raw, 1, (i64 * 3)(16, 196, 32), None, STREAM, error, 256) == 1
    assert b"channel-last x pitch 16 is smaller than its 32 channels" in error.value
    assert kernel.fn(*raw, 1, None, None, STREAM, error, 256) == 1 and b"needs the three channel pitches" in error.value
    if not torch.cuda.is_available():
        for layout in (torch.contiguous_format, torch.channels_last):
            with pytest.raises(RuntimeError, match="no NVIDIA driver found"):
                kernel(*(t.contiguous(memory_format=layout) for t in (x, weight)), scale, shift,
                       y.contiguous(memory_format=layout), attrs, STREAM, kernel="K7S2")  # fits: checks pass
