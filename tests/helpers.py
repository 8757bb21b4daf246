import functools
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from deploy.native import BUILD_DIR, find_library
from rednet.ops import output_size

# ---- what a test needs from the machine ------------------------------------------------------------------------
# `make setup` builds or fetches some things (CI must have them: a test that needs one fails under CI=true when it
# is missing); others CI cannot have (a GPU, TensorRT): tests that need those are skipped, naming the reason.
# tests/conftest.py applies this to every test marked with `requires(...)` and fails any other skip under CI.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Dependency:
    why_missing: Callable[[], str | None]  # None when present
    from_setup: bool  # provided by `make setup`, so CI has it


def _built(name: str, how: str) -> Callable[[], str | None]:
    return lambda: None if (BUILD_DIR / name).is_file() else f"{BUILD_DIR / name} is not built ({how})"


def _tensorrt_missing() -> str | None:
    from deploy.tensorrt_backend import unavailable_reason
    return unavailable_reason()


DEPENDENCIES = {
    "ort_ops": Dependency(
        lambda: None if find_library("ort_ops", required=False) else
        "librednet_ort_ops.so is not built (make setup fetches the ONNX Runtime headers and builds it)", True),
    "cpu_sweep": Dependency(_built("involution_cpu_sweep", "make setup builds it with any C++17 compiler"), True),
    "cuda_tiled_host_test": Dependency(_built("involution_cuda_tiled_host_test",
                                              "make setup builds it with any C++17 compiler"), True),
    "torch_ops": Dependency(_built("librednet_torch_ops.so", "make setup builds it against the venv's torch"), True),
    # this machine class has the CUDA toolkit (nvcc compiles here even though nothing CUDA runs)
    "nvcc": Dependency(lambda: None if shutil.which("nvcc") else "nvcc (CUDA toolkit) is not on PATH", True),
    "cuda_capi": Dependency(_built("librednet_cuda_capi.so", "make setup builds it where nvcc exists"), True),
    "nm": Dependency(lambda: None if shutil.which("nm") else "nm (binutils) is not installed", True),
    "tensorrt_headers": Dependency(_built("involution_trt_plugin_test",
                                          "needs TensorRT headers: make plugins TENSORRT_INCLUDE_DIR=..."), False),
    "tensorrt": Dependency(_tensorrt_missing, False),
    "gpu": Dependency(lambda: None if torch.cuda.is_available() else "no CUDA GPU", False),
}


@functools.cache
def why_missing(name: str) -> str | None:
    return DEPENDENCIES[name].why_missing()


def requires(*names: str) -> pytest.MarkDecorator:
    """Mark a test as needing these DEPENDENCIES (see tests/conftest.py for what happens when one is missing)."""
    unknown = set(names) - set(DEPENDENCIES)
    assert not unknown, f"unknown dependencies {unknown}; known: {sorted(DEPENDENCIES)}"
    return pytest.mark.requires(*names)



def unfold_involution(x, weight, kernel_size, stride, padding, dilation, groups):
    """The official formulation (unfold, multiply, sum) — an independent oracle for the op, computed in fp64."""
    n, c, h, w = x.shape
    ho, wo = (output_size(s, kernel_size, stride, padding, dilation) for s in (h, w))
    cols = torch.nn.functional.unfold(x.double(), kernel_size, dilation, padding, stride)
    cols = cols.view(n, groups, c // groups, kernel_size ** 2, ho, wo)
    taps = weight.double().view(n, groups, 1, kernel_size ** 2, ho, wo)
    return (cols * taps).sum(dim=3).view(n, c, ho, wo)


# ---- rounding-error bounds -------------------------------------------------------------------------------------
# Each output element is an inner product of at most K² terms. Accumulated in a precision with unit roundoff u (any
# order, with or without fused multiply-add), |fl(Σ w·x) − Σ w·x| ≤ γ_m · Σ|w|·|x| with γ_m = m·u / (1 − m·u), m = K²
# (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1, eq. 3.5). Rounding that result once more
# to a narrower output type adds at most u_out·|ŷ| + η_out, η_out being half the smallest subnormal of that type.
# The bound is computed per element from the inputs' magnitudes, so it is tight where the terms cancel; an
# implementation that rounds partial sums or products to fp16 misses it there by orders of magnitude.
# The contract (spec/Involution.yaml) accumulates fp16/bf16 in fp32, everything else in its own type.
ACCUMULATION = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
                torch.float32: torch.float32, torch.float64: torch.float64}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p for round-to-nearest with p significand bits (torch's eps is 2^(1-p))."""
    return torch.finfo(dtype).eps / 2


def half_smallest_subnormal(dtype: torch.dtype) -> float:
    """The largest absolute rounding error in the subnormal range of ``dtype``."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps / 2


def gamma(m: int, dtype: torch.dtype) -> float:
    mu = m * unit_roundoff(dtype)
    assert mu < 1, f"γ_{m} undefined for {dtype}"
    return mu / (1 - mu)


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


# The fused epilogue act(scale·acc + shift) rounds twice more (once with an FMA); with |scale·acc| + |shift| folded
# into the magnitude it is bounded like two more terms of the sum, and ReLU never widens an error.
EPILOGUE_TERMS = 2


def epilogue_oracle(acc, magnitude, epilogue):
    """(value, magnitude) after the contract's epilogue; ``epilogue`` = (scale, shift, activation) or None."""
    if epilogue is None:
        return acc, magnitude
    scale, shift, activation = epilogue
    scale, shift = (_as_tensor(t).double().view(1, -1, 1, 1) for t in (scale, shift))
    value = acc * scale + shift
    return (value.clamp_min(0) if activation == 1 else value), magnitude * scale.abs() + shift.abs()


def involution_error_bound(x, weight, attrs, output_dtype: torch.dtype, accumulation_dtype: torch.dtype,
                           epilogue=None):
    """(fp64 oracle, elementwise bound on |computed − oracle|) for the op computed from exactly these inputs;
    ``epilogue`` = (scale, shift, activation) for a fused node."""
    x, weight = _as_tensor(x), _as_tensor(weight)
    taps = attrs[0] ** 2 + (EPILOGUE_TERMS if epilogue is not None else 0)
    ref, magnitude = epilogue_oracle(unfold_involution(x, weight, *attrs),
                                     unfold_involution(x.abs(), weight.abs(), *attrs), epilogue)  # Σ|w|·|x|
    accumulation = gamma(taps, accumulation_dtype) * magnitude
    oracle = gamma(taps, torch.float64) * magnitude  # the fp64 oracle's own rounding
    bound = accumulation + oracle
    if output_dtype != accumulation_dtype:
        bound = bound + unit_roundoff(output_dtype) * (ref.abs() + bound) + half_smallest_subnormal(output_dtype)
    return ref, bound


def assert_within_rounding_bound(y, x, weight, attrs, accumulation_dtype: torch.dtype | None = None, epilogue=None):
    """``y`` (the op's output for exactly these x, weight and epilogue (scale, shift, activation)) equals the fp64
    oracle within the rounding bound of accumulating in ``accumulation_dtype`` (the contract's choice for y's type
    by default)."""
    y = _as_tensor(y)
    accumulation_dtype = accumulation_dtype or ACCUMULATION[y.dtype]
    ref, bound = involution_error_bound(x, weight, attrs, y.dtype, accumulation_dtype, epilogue)
    assert y.shape == ref.shape, (tuple(y.shape), tuple(ref.shape))
    error = (y.double() - ref).abs()
    outside = error > bound
    worst = int((error - bound).argmax())
    assert not outside.any(), (
        f"{int(outside.sum())} of {error.numel()} elements outside the {y.dtype} rounding bound; worst at flat index "
        f"{worst}: |error| {float(error.flatten()[worst]):.3g} > bound {float(bound.flatten()[worst]):.3g} "
        f"(|y| {float(ref.flatten()[worst].abs()):.3g})")


def random_inputs(n, c, h, w, kernel_size, stride, padding, dilation, groups, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ho, wo = (output_size(s, kernel_size, stride, padding, dilation) for s in (h, w))
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    weight = torch.randn(n, groups * kernel_size ** 2, ho, wo, generator=g).to(dtype)
    return x, weight


def random_epilogue(c, dtype=torch.float32, seed=0):
    """A folded-BatchNorm-like (scale, shift): scales of both signs around 1, shifts around 0."""
    g = torch.Generator().manual_seed(seed + 1)
    scale = (1 + 0.5 * torch.randn(c, generator=g)) * torch.where(torch.rand(c, generator=g) < 0.2, -1.0, 1.0)
    return scale.to(dtype), torch.randn(c, generator=g).to(dtype)


def randomise(model, seed=0):
    """Non-trivial weights and BN statistics (eval mode), so equality tests mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("bn.weight") or t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
    return model.eval()
