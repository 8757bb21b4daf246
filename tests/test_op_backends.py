"""One op test, every backend present (like mmdeploy's tests/test_ops): a single rednet::Involution node over the
attribute sweep, on the torch op, ONNX Runtime with our library (fp32/fp16), ONNX Runtime running the function
body, and onnx.reference. Also the library's error paths: bad attributes and shapes come back as ONNX Runtime
errors naming the value, and the session keeps working."""
import itertools
import json
import os

import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest
import torch

from deploy.native import find_library
from deploy.ort_session import create_session
from export.involution_onnx import single_node_model
from rednet.ops import involution, output_size

LIB = find_library("ort_ops", required=False)
needs_lib = pytest.mark.skipif(LIB is None, reason="librednet_ort_ops.so not built (make plugins)")

SWEEP = [dict(k=k, s=s, d=d, g=g, n=n, h=h, w=w)
         for (k, s, d), g, n, (h, w) in zip(itertools.product((3, 5, 7), (1, 2), (1, 2)),
                                            itertools.cycle((1, 2, 4)), itertools.cycle((1, 3, 2)),
                                            itertools.cycle(((9, 9), (12, 10), (15, 8), (8, 13))))]
SWEEP += [dict(k=7, s=1, d=1, g=1, n=1, h=5, w=200), dict(k=3, s=2, d=1, g=2, n=2, h=1, w=1, c=48),
          dict(k=1, s=1, d=1, g=2, n=1, h=4, w=4), dict(k=9, s=3, d=1, g=1, n=1, h=17, w=19, c=20)]
ONNX_TYPE = {np.float32: onnx.TensorProto.FLOAT, np.float16: onnx.TensorProto.FLOAT16}


def node_model(case, dtype=np.float32, with_function=True, **attr_overrides):
    attrs = dict(kernel_size=case["k"], stride=case["s"], padding=(case["k"] - 1) // 2 * case["d"],
                 dilation=case["d"], groups=case["g"])
    return single_node_model({**attrs, **attr_overrides}, ONNX_TYPE[dtype], with_function)


def inputs(case, seed=0):
    c = case.get("c", 16 * case["g"])
    pad = (case["k"] - 1) // 2 * case["d"]
    ho, wo = (output_size(v, case["k"], case["s"], pad, case["d"]) for v in (case["h"], case["w"]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], c, case["h"], case["w"]), dtype=np.float32)
    weight = rng.standard_normal((case["n"], case["g"] * case["k"] ** 2, ho, wo), dtype=np.float32)
    return x, weight, (case["k"], case["s"], pad, case["d"], case["g"])


def reference(x, weight, attrs):
    return involution(torch.from_numpy(x).double(), torch.from_numpy(weight).double(), *attrs).numpy()


def run_backend(backend, model, x, weight):
    feeds = {"x": x, "weight": weight}
    if backend == "onnx.reference":
        return onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0]
    session = create_session(model, custom_ops=backend == "onnxruntime", intra_op_threads=2)
    return session.run(None, feeds)[0]


BACKENDS = [pytest.param("onnxruntime", marks=needs_lib), "onnxruntime-function", "onnx.reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "k{k}s{s}d{d}g{g}n{n}_{h}x{w}".format(**c))
def test_fp32_every_backend(backend, case):
    x, weight, attrs = inputs(case)
    ref = reference(x, weight, attrs)
    y = run_backend(backend, node_model(case, with_function=backend != "onnxruntime"), x, weight)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1.0)


@pytest.mark.parametrize("backend", [pytest.param("onnxruntime", marks=needs_lib), "onnxruntime-function"])
@pytest.mark.parametrize("case", SWEEP[::3], ids=lambda c: "k{k}s{s}d{d}g{g}n{n}_{h}x{w}".format(**c))
def test_fp16_accumulates_in_fp32(backend, case):
    x, weight, attrs = inputs(case, seed=1)
    x16, w16 = x.astype(np.float16), weight.astype(np.float16)
    ref = reference(x16.astype(np.float32), w16.astype(np.float32), attrs)  # same rounded inputs
    y = run_backend(backend, node_model(case, np.float16, with_function=backend != "onnxruntime"), x16, w16)
    assert y.dtype == np.float16
    # only the final rounding to fp16 remains (fp16 accumulation would be ~K²·2^-11)
    assert np.abs(y.astype(np.float64) - ref).max() <= 2 ** -10 * max(np.abs(ref).max(), 1.0)


@needs_lib
def test_library_runs_our_kernel_not_the_function_body():
    """With the library registered the node is claimed by our kernel even though the function body is present."""
    case = SWEEP[0]
    session = create_session(node_model(case), custom_ops=True, enable_profiling=True)
    x, weight, _ = inputs(case)
    session.run(None, {"x": x, "weight": weight})
    profile = session.end_profiling()
    events = json.loads(open(profile).read())
    os.remove(profile)
    ops = {e["args"].get("op_name") for e in events if e.get("cat") == "Node"}
    assert "Involution" in ops and "Gather" not in ops


@needs_lib
def test_threads_are_honoured_and_results_identical():
    case = dict(k=7, s=1, d=1, g=4, n=2, h=28, w=28)
    x, weight, attrs = inputs(case)
    outs = [create_session(node_model(case), intra_op_threads=t).run(None, {"x": x, "weight": weight})[0]
            for t in (1, 2)]
    np.testing.assert_array_equal(outs[0], outs[1])


BAD_ATTRS = [
    (dict(kernel_size=4), "kernel_size=4"),
    (dict(stride=0), "stride=0"),
    (dict(padding=-1), "padding=-1"),
    (dict(dilation=0), "dilation=0"),
    (dict(groups=0), "groups=0"),
    (dict(groups=None), "missing or non-int attribute 'groups'"),
    (dict(kernel_size=1001), "supported range"),
]


@needs_lib
@pytest.mark.parametrize("overrides,needle", BAD_ATTRS, ids=[b[1] for b in BAD_ATTRS])
def test_bad_attributes_are_errors_naming_the_value(overrides, needle):
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    session = create_session(node_model(case, with_function=False, **overrides))
    x, weight, _ = inputs(case)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=needle):
        session.run(None, {"x": x, "weight": weight})


@needs_lib
def test_bad_shapes_are_errors_and_the_session_survives():
    case = dict(k=3, s=2, d=1, g=2, n=2, h=9, w=9)
    session = create_session(node_model(case, with_function=False))
    x, weight, _ = inputs(case)
    bad = [
        ({"x": x[0], "weight": weight}, "x must have rank 4"),
        ({"x": x, "weight": weight[..., :-1]}, r"weight shape \(2, 18, 5, 4\) does not match"),
        ({"x": x[:, :31], "weight": weight}, "C=31"),
        ({"x": x[:1], "weight": weight}, r"weight shape \(2, 18, 5, 5\) does not match .* \(1, 18, 5, 5\)"),
        ({"x": np.zeros((2, 32, 0, 9), np.float32), "weight": weight}, "empty or negative"),
    ]
    for feeds, needle in bad:
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=needle):
            session.run(None, feeds)
    np.testing.assert_allclose(session.run(None, {"x": x, "weight": weight})[0],
                               reference(x, weight, (3, 2, 1, 1, 2)), rtol=1e-5, atol=1e-5)


@needs_lib
def test_empty_batch_gives_empty_output():
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    session = create_session(node_model(case, with_function=False))
    y = session.run(None, {"x": np.zeros((0, 32, 6, 6), np.float32), "weight": np.zeros((0, 18, 6, 6), np.float32)})[0]
    assert y.shape == (0, 32, 6, 6)
