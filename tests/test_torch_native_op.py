"""rednet::involution on the CPU runs the shared C++ kernel (librednet_torch_ops) and agrees with the independent
unfold reference; the strided PyTorch formulation stays correct as the fallback."""
import pytest
import torch

from helpers import random_inputs, requires, unfold_involution
from rednet.ops import involution, involution_strided
from rednet.ops.involution import native_cpu_kernel

# (N, C, H, W, kernel_size, stride, padding, dilation, groups): RedNet's shapes and every attribute off its default
CASES = [
    (2, 32, 14, 14, 7, 1, 3, 1, 2),
    (1, 64, 15, 13, 7, 2, 3, 1, 4),
    (2, 16, 9, 11, 3, 1, 1, 1, 1),
    (1, 24, 12, 10, 3, 2, 2, 2, 3),
    (1, 8, 7, 7, 5, 3, 0, 1, 8),
    (3, 48, 6, 9, 1, 1, 0, 1, 6),
]
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11}


def error_bound(x, weight, case, dtype):
    """Per-element bound: K² fp32 multiply-adds give at most K²·u32·Σ|w·x| (recursive summation), plus one
    rounding of the result to the output type (u of that type). Inputs are exact in their type and the
    reference runs in fp64 on the same values, so accumulating fp16 in fp16 (K²·2^-11) breaks this."""
    k = case[4]
    magnitude = unfold_involution(x.abs(), weight.abs(), *case[4:])
    return (k * k + 1) * UNIT_ROUNDOFF[torch.float32] * magnitude + UNIT_ROUNDOFF[dtype] * magnitude


@pytest.fixture(scope="module")
def native():
    return native_cpu_kernel()


def ops_run_by(fn):
    """Names of every ATen/custom op that ``fn`` ran, nested ones included (the profiler sees inside custom ops)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, {event.name for event in prof.events()}


@requires("torch_ops")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_op_runs_the_native_kernel_within_the_rounding_bound(native, case, dtype):
    x, weight = random_inputs(*case, dtype=dtype)
    y, ops = ops_run_by(lambda: involution(x, weight, *case[4:]))
    assert "rednet_native::involution_cpu" in ops
    assert y.dtype == dtype
    ref = unfold_involution(x, weight, *case[4:])
    assert ((y.double() - ref).abs() <= error_bound(x.double(), weight.double(), case, dtype)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "x".join(map(str, c)))
def test_strided_fallback_within_the_rounding_bound(case, dtype):
    x, weight = random_inputs(*case, dtype=dtype)
    y = involution_strided(x, weight, *case[4:])
    ref = unfold_involution(x, weight, *case[4:])
    assert ((y.double() - ref).abs() <= error_bound(x.double(), weight.double(), case, dtype)).all()


@requires("torch_ops")
def test_native_kernel_is_the_same_on_any_thread_count(native):
    x, weight = random_inputs(*CASES[1])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native(x, weight, *CASES[1][4:])
        torch.set_num_threads(2)
        two = native(x, weight, *CASES[1][4:])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@requires("torch_ops")
def test_native_kernel_takes_non_contiguous_inputs(native):
    x, weight = random_inputs(*CASES[0])
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, channels-last-like strides
    assert torch.equal(native(x_t, weight, *CASES[0][4:]), native(x, weight, *CASES[0][4:]))


@pytest.mark.parametrize("change, message", [
    (dict(kernel_size=4), "kernel_size=4"),
    (dict(groups=5), "groups=5"),
    (dict(x_dtype=torch.float64), "dtype Double"),
    (dict(weight_shape=(2, 98, 14, 13)), "weight shape"),
])
@requires("torch_ops")
def test_native_kernel_refuses_bad_input_naming_it(native, change, message):
    x, weight = random_inputs(*CASES[0])
    attrs = dict(kernel_size=7, stride=1, padding=3, dilation=1, groups=2)
    attrs.update({k: v for k, v in change.items() if k in attrs})
    if "x_dtype" in change:
        x, weight = x.to(change["x_dtype"]), weight.to(change["x_dtype"])
    if "weight_shape" in change:
        weight = torch.zeros(change["weight_shape"])
    with pytest.raises(ValueError, match=message):
        native(x, weight, *attrs.values())


@requires("torch_ops")
def test_gradients_flow_through_the_native_forward(native):
    case = CASES[3]
    x, weight = random_inputs(*case)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    involution(x, weight, *case[4:]).square().sum().backward()
    x64, w64 = x.detach().double().requires_grad_(True), weight.detach().double().requires_grad_(True)
    unfold_involution(x64, w64, *case[4:]).square().sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-4)
