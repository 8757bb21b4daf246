"""Untrusted models on the ONNX Runtime op: a single rednet::Involution node with attribute extremes that pass the
contract (huge stride, dilation, padding, kernel on tiny tensors) runs in memory bounded by its tensors (peak RSS
measured in a fresh subprocess, with an address-space limit so a regression fails instead of swapping), and
values beyond the contract are refused with an error naming the value. The contract's maxima come from
spec/Involution.yaml, and the C++ mirror is held to them."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploy.native import find_library
from deploy.ort_session import create_session
from export.involution_onnx import single_node_model
from rednet.ops import attribute_names, check_attributes, load_spec, output_size
from helpers import requires

LIB = find_library("ort_ops", required=False)
pytestmark = requires("ort_ops")

RSS_GROWTH_BOUND_MB = 64  # the op's own bound is 256 KB of scratch per thread plus the (tiny) output
ADDRESS_SPACE_HEADROOM_MB = 2048

# the size attributes' maxima (activation's value set is checked with the other bad attributes)
MAX = {name: rule["max"] for name, rule in load_spec()["attributes"].items() if "max" in rule and "values" not in rule}
K_MAX, HUGE_DILATION = MAX["kernel_size"], 2 * MAX["padding"] // (MAX["kernel_size"] - 1)
# (kernel_size, stride, padding, dilation, groups), x shape: all pass validation, most at the spec's maxima (so
# the C++ mirror accepts exactly those); tensors are a few KB at most (the largest: kernel_size 255's
# 65025-channel weight of one pixel).
HOSTILE = {
    "stride2048_on_1x1": ((1, 2048, 0, 1, 1), (1, 8, 1, 1)),
    "max_stride_max_padding": ((3, MAX["stride"], MAX["padding"], 1, 1), (1, 8, 1, 1)),
    "max_dilation_max_padding": ((3, 1, MAX["padding"], MAX["dilation"], 1), (1, 8, 1, 1)),
    "max_kernel": ((K_MAX, 1, (K_MAX - 1) // 2, 1, 1), (1, 4, 1, 1)),
    "max_kernel_huge_dilation": ((K_MAX, 64, MAX["padding"], HUGE_DILATION, 1), (1, 4, 2, 3)),
    "depthwise_huge_stride": ((1, 4096, 4096, 1, 64), (2, 64, 3, 5)),
}

RUNNER = textwrap.dedent("""\
    import json, resource, sys
    import numpy as np
    from deploy.ort_session import create_session
    model, x_path, w_path, y_path = sys.argv[1:]
    session = create_session(model, intra_op_threads=2)
    x = np.load(x_path)
    c = x.shape[1]
    feeds = {"x": x, "weight": np.load(w_path), "scale": np.ones(c, x.dtype), "shift": np.zeros(c, x.dtype)}
    with open("/proc/self/status") as f:
        vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limit = (vm_kb << 10) + (%d << 20)  # a runaway allocation fails here instead of taking the machine
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    y = session.run(None, feeds)[0]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(y_path, y)
    print(json.dumps({"rss_growth_mb": (after - before) / 1024}))
""" % ADDRESS_SPACE_HEADROOM_MB)


def direct_reference(x, weight, k, s, p, d, g):
    """The contract evaluated pixel by pixel in fp64, visiting only taps inside the input (the outputs are tiny)."""
    n, c, h, w = x.shape
    ho, wo = (output_size(v, k, s, p, d) for v in (h, w))
    y = np.zeros((n, c, ho, wo))
    xg = x.astype(np.float64).reshape(n, g, c // g, h, w)
    taps = weight.astype(np.float64).reshape(n, g, k, k, ho, wo)
    for oh in range(ho):
        for ow in range(wo):
            for kh in range(k):
                hi = oh * s + kh * d - p
                if not 0 <= hi < h:
                    continue
                for kw in range(k):
                    wi = ow * s + kw * d - p
                    if 0 <= wi < w:
                        y[:, :, oh, ow] += (taps[:, :, kh, kw, oh, ow, None] * xg[:, :, :, hi, wi]).reshape(n, c)
    return y


def inputs(attrs, x_shape, dtype):
    k, s, p, d, g = attrs
    n, c, h, w = x_shape
    ho, wo = (output_size(v, k, s, p, d) for v in (h, w))
    rng = np.random.default_rng(0)
    return (rng.standard_normal(x_shape).astype(dtype), rng.standard_normal((n, g * k * k, ho, wo)).astype(dtype))


def run_in_subprocess(tmp_path, attrs, x, weight):
    elem = onnx.TensorProto.FLOAT if x.dtype == np.float32 else onnx.TensorProto.FLOAT16
    model = tmp_path / "hostile.onnx"
    onnx.save(single_node_model(dict(zip(attribute_names(), attrs)), elem, with_function=False), model)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", weight)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(model), str(tmp_path / "x.npy"), str(tmp_path / "w.npy"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the op failed on {attrs} (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(tmp_path / "y.npy")


CASES = [(name, np.float32) for name in HOSTILE] + [(name, np.float16) for name in
                                                     ("stride2048_on_1x1", "max_kernel_huge_dilation")]


@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{np.dtype(t).name}" for n, t in CASES])
def test_extreme_attributes_run_in_bounded_memory(tmp_path, name, dtype):
    attrs, x_shape = HOSTILE[name]
    x, weight = inputs(attrs, x_shape, dtype)
    stats, y = run_in_subprocess(tmp_path, attrs, x, weight)
    assert stats["rss_growth_mb"] < RSS_GROWTH_BOUND_MB, f"{name}: peak RSS grew {stats['rss_growth_mb']:.0f} MB"
    ref = direct_reference(x, weight, *attrs)
    assert y.shape == ref.shape and y.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 2 ** -10
    assert np.abs(y.astype(np.float64) - ref).max() <= tol * max(np.abs(ref).max(), 1.0)


def test_spec_states_a_maximum_for_every_unbounded_attribute():
    assert set(MAX) == {"kernel_size", "stride", "padding", "dilation"}


BEYOND_SPEC = [(name, value + (2 if name == "kernel_size" else 1)) for name, value in MAX.items()]


@pytest.mark.parametrize("name,value", BEYOND_SPEC, ids=[b[0] for b in BEYOND_SPEC])
def test_values_beyond_the_spec_are_refused_naming_the_value(name, value):
    attrs = dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1)
    with pytest.raises(ValueError, match=f"{name}={value} is outside the supported range"):
        check_attributes({**attrs, name: value})
    session = create_session(single_node_model({**attrs, name: value}, with_function=False))
    x, weight = inputs((3, 1, 1, 1, 1), (1, 4, 5, 5), np.float32)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=f"{name}={value} is outside the supported range"):
        session.run(None, {"x": x, "weight": weight, "scale": np.ones(4, np.float32), "shift": np.zeros(4, np.float32)})
