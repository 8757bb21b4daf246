"""One op test, every backend present (like mmdeploy's tests/test_ops): a single rednet::Involution node over the
attribute sweep, on ONNX Runtime with our library (fp32/fp16), ONNX Runtime running the function body, and
onnx.reference, each against the fp64 unfold oracle within the rounding bound (tests/helpers.py). Every other case
fuses an epilogue (a folded BatchNorm's scale/shift of both signs and ReLU); the rest run the identity epilogue. Also the library's error paths: bad attributes and shapes come back as ONNX Runtime
errors naming the value, and the session keeps working."""
import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest

from deploy.ort_session import create_session
from export.involution_onnx import single_node_model
from helpers import assert_within_rounding_bound, requires
from rednet.ops import output_size

needs_lib = requires("ort_ops")

# "same" padding unless a case names its own (p), so padding is swept apart from kernel_size and dilation too
SWEEP = [dict(k=k, s=s, d=d, g=g, n=n, h=h, w=w)
         for (k, s, d), g, n, (h, w) in zip(itertools.product((3, 5, 7), (1, 2), (1, 2)),
                                            itertools.cycle((1, 2, 4)), itertools.cycle((1, 3, 2)),
                                            itertools.cycle(((9, 9), (12, 10), (15, 8), (8, 13))))]
SWEEP += [dict(k=7, s=1, d=1, g=1, n=1, h=5, w=200), dict(k=3, s=2, d=1, g=2, n=2, h=1, w=1, c=48),
          dict(k=1, s=1, d=1, g=2, n=1, h=4, w=4), dict(k=9, s=3, d=1, g=1, n=1, h=17, w=19, c=20),
          dict(k=5, s=2, d=2, g=3, n=2, h=13, w=11, p=0), dict(k=3, s=3, d=4, g=2, n=1, h=10, w=14, p=6),
          dict(k=5, s=1, d=3, g=4, n=1, h=7, w=9, p=5)]
SWEEP = [{**case, "fused": i % 2 == 1} for i, case in enumerate(SWEEP)]
ONNX_TYPE = {np.float32: onnx.TensorProto.FLOAT, np.float16: onnx.TensorProto.FLOAT16}


def case_id(case):
    return "k{k}s{s}p{p}d{d}g{g}n{n}_{h}x{w}".format(**{**case, "p": case.get("p", "same")}) + (
        "_bn_relu" if case.get("fused") else "")


def case_attrs(case):
    """(kernel_size, stride, padding, dilation, groups) in contract order."""
    padding = case.get("p", (case["k"] - 1) // 2 * case["d"])
    return case["k"], case["s"], padding, case["d"], case["g"]


def node_model(case, dtype=np.float32, with_function=True, **attr_overrides):
    attrs = dict(zip(("kernel_size", "stride", "padding", "dilation", "groups"), case_attrs(case)),
                 activation=int(case.get("fused", False)))
    return single_node_model({**attrs, **attr_overrides}, ONNX_TYPE[dtype], with_function)


def inputs(case, seed=0, dtype=np.float32):
    """(feeds for x, weight, scale, shift in ``dtype``; attrs; epilogue (scale, shift, activation) for the oracle)."""
    c = case.get("c", 16 * case["g"])
    attrs = case_attrs(case)
    ho, wo = (output_size(v, *attrs[:4]) for v in (case["h"], case["w"]))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], c, case["h"], case["w"]), dtype=np.float32)
    weight = rng.standard_normal((case["n"], case["g"] * case["k"] ** 2, ho, wo), dtype=np.float32)
    if case.get("fused"):
        scale = (1 + 0.5 * rng.standard_normal(c, dtype=np.float32)) * rng.choice([-1, 1], c).astype(np.float32)
        shift = rng.standard_normal(c, dtype=np.float32)
    else:
        scale, shift = np.ones(c, np.float32), np.zeros(c, np.float32)
    feeds = {name: v.astype(dtype) for name, v in zip(("x", "weight", "scale", "shift"), (x, weight, scale, shift))}
    return feeds, attrs, (feeds["scale"], feeds["shift"], int(case.get("fused", False)))


def check(y, feeds, attrs, epilogue):
    assert_within_rounding_bound(y, feeds["x"], feeds["weight"], attrs, epilogue=epilogue)


def run_backend(backend, model, feeds):
    if backend == "onnx.reference":
        return onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0]
    session = create_session(model, custom_ops=backend == "onnxruntime", intra_op_threads=2)
    return session.run(None, feeds)[0]


BACKENDS = [pytest.param("onnxruntime", marks=needs_lib), "onnxruntime-function", "onnx.reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SWEEP, ids=case_id)
def test_fp32_every_backend(backend, case):
    feeds, attrs, epilogue = inputs(case)
    y = run_backend(backend, node_model(case, with_function=backend != "onnxruntime"), feeds)
    assert y.dtype == np.float32
    check(y, feeds, attrs, epilogue)


# onnx.reference computes each op in its own type, so it shows where the function body would accumulate in fp16
# (ONNX Runtime's CPU provider runs fp16 Mul/ReduceSum in fp32 whatever the body says)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SWEEP[::3], ids=case_id)
def test_fp16_accumulates_in_fp32(backend, case):
    feeds, attrs, epilogue = inputs(case, seed=1, dtype=np.float16)
    y = run_backend(backend, node_model(case, np.float16, with_function=backend != "onnxruntime"), feeds)
    assert y.dtype == np.float16
    check(y, feeds, attrs, epilogue)  # fp32 accumulation, then one rounding to fp16


def profiled_run(case, **session_options):
    """Run the single-node model once with ONNX Runtime's profiler on: (output, the profile's node events)."""
    session = create_session(node_model(case), custom_ops=True, enable_profiling=True, **session_options)
    feeds, _, _ = inputs(case)
    try:
        y = session.run(None, feeds)[0]
    finally:  # the profile is written into the working directory: never leave it there, also when the run fails
        profile = Path(session.end_profiling())
        events = [e for e in json.loads(profile.read_text()) if e.get("cat") == "Node"]
        profile.unlink()
    return y, events


@needs_lib
def test_library_runs_our_kernel_not_the_function_body():
    """With the library registered the node is claimed by our kernel even though the function body is present."""
    _, events = profiled_run(SWEEP[0])
    ops = {e["args"].get("op_name") for e in events}
    assert "Involution" in ops and "Gather" not in ops


@needs_lib
def test_threads_are_honoured_and_results_identical():
    """The node's profile shows ONNX Runtime's intra-op pool of the requested size (t − 1 workers beside the calling
    thread) and a parallel loop our kernel ran on it; with one thread there is no pool. The output is the same.
    (Which thread ran how many items depends on scheduling, so that is not asserted.)"""
    case = dict(k=7, s=1, d=1, g=4, n=2, h=28, w=28)
    outs = []
    for threads in (1, 2, 3):
        y, events = profiled_run(case, intra_op_threads=threads)
        (stats,) = [e["args"]["thread_scheduling_stats"] for e in events if e["args"].get("op_name") == "Involution"]
        if threads == 1:
            assert stats == "", stats
        else:
            assert len(stats["sub_threads"]) == threads - 1, stats
            assert stats["main_thread"]["block_size"], f"the kernel ran no parallel loop on the pool: {stats}"
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


BAD_ATTRS = [
    (dict(kernel_size=4), "kernel_size=4"),
    (dict(stride=0), "stride=0"),
    (dict(padding=-1), "padding=-1"),
    (dict(dilation=0), "dilation=0"),
    (dict(groups=0), "groups=0"),
    (dict(groups=None), "missing or non-int attribute 'groups'"),
    (dict(kernel_size=1001), "supported range"),
    (dict(activation=2), r"activation=2 is not one of 0 \(none\), 1 \(relu\)"),
]


@needs_lib
@pytest.mark.parametrize("overrides,needle", BAD_ATTRS, ids=[b[1] for b in BAD_ATTRS])
def test_bad_attributes_are_errors_naming_the_value(overrides, needle):
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    session = create_session(node_model(case, with_function=False, **overrides))
    feeds, _, _ = inputs(case)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=needle):
        session.run(None, feeds)


@needs_lib
def test_activation_may_be_omitted():
    """activation has a default (none) in the contract: a node without it runs the identity epilogue's ReLU-free
    output."""
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    feeds, attrs, _ = inputs(case)
    y = create_session(node_model(case, with_function=False, activation=None)).run(None, feeds)[0]
    check(y, feeds, attrs, None)
    assert (y < 0).any()


@needs_lib
def test_bad_shapes_are_errors_and_the_session_survives():
    case = dict(k=3, s=2, d=1, g=2, n=2, h=9, w=9)
    session = create_session(node_model(case, with_function=False))
    good, attrs, epilogue = inputs(case)
    x, weight, scale = good["x"], good["weight"], good["scale"]
    bad = [
        ({"x": x[0]}, "x must have rank 4"),
        ({"weight": weight[..., :-1]}, r"weight shape \(2, 18, 5, 4\) does not match"),
        ({"x": x[:, :31]}, "C=31"),
        ({"x": x[:1]}, r"weight shape \(2, 18, 5, 5\) does not match .* \(1, 18, 5, 5\)"),
        ({"x": np.zeros((2, 32, 0, 9), np.float32)}, "empty or negative"),
        ({"scale": scale[:31]}, r"scale shape \(31,\) does not match the contract \(C,\) = \(32,\)"),
        ({"shift": scale.reshape(1, 32)}, r"shift shape \(1, 32\)"),
    ]
    for changed, needle in bad:
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=needle):
            session.run(None, {**good, **changed})
    check(session.run(None, good)[0], good, attrs, epilogue)


@needs_lib
def test_a_node_without_scale_and_shift_is_refused_saying_why():
    """A node exported before the fused epilogue (inputs x, weight only) gets an error naming the missing inputs."""
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    model = node_model(case, with_function=False)
    del model.graph.node[0].input[2:]
    del model.graph.input[2:]
    feeds, _, _ = inputs(case)
    session = create_session(model)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                       match=r"no scale/shift inputs; the contract needs 4 inputs \(x, weight, scale, shift\)"):
        session.run(None, {"x": feeds["x"], "weight": feeds["weight"]})


@needs_lib
def test_empty_batch_gives_empty_output():
    case = dict(k=3, s=1, d=1, g=2, n=1, h=6, w=6)
    session = create_session(node_model(case, with_function=False))
    feeds, _, _ = inputs(case)
    y = session.run(None, {**feeds, "x": np.zeros((0, 32, 6, 6), np.float32),
                           "weight": np.zeros((0, 18, 6, 6), np.float32)})[0]
    assert y.shape == (0, 32, 6, 6)
