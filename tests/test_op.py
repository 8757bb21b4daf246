"""The torch op rednet::involution against the contract (spec/Involution.yaml)."""
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import assert_within_rounding_bound, random_epilogue, random_inputs
from rednet.ops import involution, load_spec

# K × stride × dilation, each with its own groups / size / batch so the sweep stays small but covers
# odd and even sizes, N 1–3 and groups 1–4.
SWEEP = [
    dict(kernel_size=k, stride=s, dilation=d, groups=g, n=n, h=h, w=w)
    for (k, s, d), g, n, (h, w) in zip(
        itertools.product((3, 5, 7), (1, 2), (1, 2)),
        itertools.cycle((1, 2, 4)), itertools.cycle((1, 2, 3)),
        itertools.cycle(((9, 9), (12, 10), (15, 8), (8, 13))))
]


def _run(case, dtype, padding=None):
    k = case["kernel_size"]
    padding = (k - 1) // 2 * case["dilation"] if padding is None else padding
    attrs = (k, case["stride"], padding, case["dilation"], case["groups"])
    x, weight = random_inputs(case["n"], 8 * case["groups"], case["h"], case["w"], *attrs, dtype=dtype)
    return x, weight, attrs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "k{kernel_size}s{stride}d{dilation}g{groups}n{n}_{h}x{w}".format(**c))
def test_matches_unfold_oracle(case, dtype):
    x, weight, attrs = _run(case, dtype)
    y = involution(x, weight, *attrs)
    assert y.dtype == dtype
    assert_within_rounding_bound(y, x, weight, attrs)  # fp16/bf16: fp32 accumulation + one rounding to y's type


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_padding_other_than_same(padding):
    x, weight, attrs = _run(dict(kernel_size=3, stride=2, dilation=1, groups=2, n=2, h=11, w=7), torch.float64,
                            padding=padding)
    assert_within_rounding_bound(involution(x, weight, *attrs), x, weight, attrs)


def test_channel_layout_by_direct_loops():
    """Pin the contract's indexing with plain loops: weight channel g*K*K + kh*K + kw, group c // (C/G)."""
    k, s, p, d, g = 3, 2, 1, 2, 2
    x, weight = random_inputs(2, 4, 6, 5, k, s, p, d, g, dtype=torch.float64)
    y = involution(x, weight, k, s, p, d, g)
    n_, c_, h_, w_ = x.shape
    for n, c, ho, wo in itertools.product(*(range(v) for v in y.shape)):
        group = c // (c_ // g)
        total = 0.0
        for kh, kw in itertools.product(range(k), range(k)):
            hi, wi = ho * s + kh * d - p, wo * s + kw * d - p
            if 0 <= hi < h_ and 0 <= wi < w_:
                total += weight[n, group * k * k + kh * k + kw, ho, wo].item() * x[n, c, hi, wi].item()
        assert abs(y[n, c, ho, wo].item() - total) < 1e-12


@pytest.mark.parametrize("attrs", [(3, 1, 1, 1, 2), (5, 2, 2, 1, 1), (3, 2, 2, 2, 4), (7, 2, 3, 1, 2)])
def test_gradcheck_fp64(attrs):
    x, weight = random_inputs(2, 8, 7, 6, *attrs, dtype=torch.float64)
    x.requires_grad_(), weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: involution(a, b, *attrs), (x, weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck_fake_kernel_schema_and_autograd(dtype):
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration, and AOT dispatch agree."""
    attrs = (3, 2, 1, 1, 2)
    x, weight = random_inputs(2, 16, 9, 9, *attrs, dtype=dtype)
    x.requires_grad_(dtype == torch.float32), weight.requires_grad_(dtype == torch.float32)
    torch.library.opcheck(torch.ops.rednet.involution.default, (x, weight, *attrs))


def test_meta_tensors_give_shapes():
    x = torch.empty(3, 32, 57, 41, device="meta")
    weight = torch.empty(3, 2 * 49, 29, 21, device="meta")
    assert involution(x, weight, 7, 2, 3, 1, 2).shape == (3, 32, 29, 21)


def test_torch_compile_sees_shapes():
    attrs = (3, 1, 1, 1, 2)
    x, weight = random_inputs(1, 32, 8, 8, *attrs)
    compiled = torch.compile(lambda a, b: involution(a, b, *attrs) * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, weight), involution(x, weight, *attrs) * 2)


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any aten op inside the op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_unfold():
    """Intermediates stay the size of the padded input or output — never K*K times the input."""
    attrs = (7, 1, 3, 1, 2)
    x, weight = random_inputs(1, 32, 20, 20, *attrs)
    with _LargestAllocation() as mode:
        involution(x, weight, *attrs)
    padded_input = 32 * 26 * 26
    assert mode.largest <= max(padded_input, weight.numel()), mode.largest
    assert mode.largest < 49 * x.numel() / 10


BAD_INPUTS = [
    # (x shape, weight shape, attrs, text the error must contain)
    ((32, 9, 9), (1, 18, 9, 9), (3, 1, 1, 1, 2), "rank 4"),
    ((1, 32, 9, 9), (18, 9, 9), (3, 1, 1, 1, 2), "rank 4"),
    ((1, 30, 9, 9), (1, 36, 9, 9), (3, 1, 1, 1, 4), "C=30"),
    ((1, 32, 9, 9), (1, 18, 8, 9), (3, 1, 1, 1, 2), "(1, 18, 8, 9)"),
    ((1, 32, 9, 9), (1, 27, 9, 9), (3, 1, 1, 1, 2), "(1, 27, 9, 9)"),
    ((1, 32, 9, 9), (1, 32, 9, 9), (4, 1, 1, 1, 2), "kernel_size=4"),
    ((1, 32, 9, 9), (1, 18, 9, 9), (3, 0, 1, 1, 2), "stride=0"),
    ((1, 32, 9, 9), (1, 18, 9, 9), (3, 1, -1, 1, 2), "padding=-1"),
    ((1, 32, 9, 9), (1, 18, 9, 9), (3, 1, 1, 0, 2), "dilation=0"),
    ((1, 32, 9, 9), (1, 18, 9, 9), (3, 1, 1, 1, 0), "groups=0"),
    ((1, 32, 2, 2), (1, 98, 1, 1), (7, 1, 0, 1, 2), "too small"),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,needle", BAD_INPUTS, ids=[b[3] for b in BAD_INPUTS])
def test_bad_input_names_the_value(x_shape, w_shape, attrs, needle):
    with pytest.raises(ValueError) as info:
        involution(torch.zeros(x_shape), torch.zeros(w_shape), *attrs)
    assert needle in str(info.value)


def test_mixed_dtypes_rejected():
    x, weight = random_inputs(1, 16, 5, 5, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="float16"):
        involution(x, weight.half(), 3, 1, 1, 1, 1)


def test_spec_names_the_torch_signature():
    spec = load_spec()
    assert list(spec["attributes"]) == ["kernel_size", "stride", "padding", "dilation", "groups", "activation"]
    assert [i["name"] for i in spec["inputs"]] == ["x", "weight", "scale", "shift"]
    schema = torch.ops.rednet.involution.default._schema
    # the sizes, then the epilogue's optional tensors and its attribute
    assert [a.name for a in schema.arguments] == ["x", "weight", *list(spec["attributes"])[:5], "scale", "shift",
                                                  "activation"]
    assert schema.arguments[-1].default_value == spec["attributes"]["activation"]["default"]


@pytest.mark.parametrize("activation", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("case", SWEEP[::3], ids=lambda c: "k{kernel_size}s{stride}d{dilation}g{groups}".format(**c))
def test_fused_epilogue_matches_oracle(case, dtype, activation):
    x, weight, attrs = _run(case, dtype)
    scale, shift = random_epilogue(x.shape[1], dtype)
    y = involution(x, weight, *attrs, scale, shift, activation)
    assert_within_rounding_bound(y, x, weight, attrs, epilogue=(scale, shift, activation))
    if activation:
        assert (y >= 0).all() and (y == 0).any()


# (kernel, stride, padding): on AVX-512 the CPU kernel's planar path, its staged 7x7 block, its generic staged block
@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (7, 1, 3), (3, 2, 1)], ids=["k3s1", "k7s1", "k3s2"])
def test_relu_alone_and_nan_passes(k, s, p):
    x, weight = random_inputs(1, 16, 6, 6, k, s, p, 1, 1)
    x[0, 3, 2, 2] = float("nan")
    y = involution(x, weight, k, s, p, 1, 1, activation=1)
    plain = involution(x, weight, k, s, p, 1, 1)
    assert y[0, 3].isnan().sum() == plain[0, 3].isnan().sum() > 0  # ReLU lets NaN through, like torch.relu
    finite = ~plain.isnan()
    assert torch.equal(y[finite], plain[finite].clamp_min(0))


@pytest.mark.parametrize("activation", [0, 1])
def test_gradcheck_fp64_with_epilogue(activation):
    attrs = (3, 2, 1, 1, 2)
    x, weight = random_inputs(2, 8, 7, 6, *attrs, dtype=torch.float64)
    scale, shift = random_epilogue(8, torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, weight, scale, shift))
    assert torch.autograd.gradcheck(lambda a, b, s, t: involution(a, b, *attrs, s, t, activation), inputs)


def test_opcheck_with_epilogue():
    attrs = (3, 1, 1, 1, 2)
    x, weight = random_inputs(2, 16, 7, 7, *attrs)
    scale, shift = random_epilogue(16)
    torch.library.opcheck(torch.ops.rednet.involution.default,
                          (x.requires_grad_(), weight.requires_grad_(), *attrs, scale.requires_grad_(), shift, 1))


@pytest.mark.parametrize("scale_shape, shift_shape, activation, needle", [
    ((15,), (16,), 0, r"scale shape \(15,\)"),
    ((16,), (16, 1), 0, r"shift shape \(16, 1\)"),
    ((16,), (16,), 2, "activation=2 is not one of 0 \\(none\\), 1 \\(relu\\)"),
])
def test_bad_epilogue_names_the_value(scale_shape, shift_shape, activation, needle):
    x, weight = random_inputs(1, 16, 5, 5, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match=needle):
        involution(x, weight, 3, 1, 1, 1, 1, torch.ones(scale_shape), torch.zeros(shift_shape), activation)


def test_epilogue_dtype_must_match():
    x, weight = random_inputs(1, 16, 5, 5, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="scale dtype torch.float16"):
        involution(x, weight, 3, 1, 1, 1, 1, torch.ones(16, dtype=torch.float16), torch.zeros(16), 0)
