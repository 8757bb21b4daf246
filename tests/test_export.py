"""ONNX export: one rednet::Involution node per involution, portable function body, shapes, metadata, fp16."""
import functools
import json

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.reference
import onnxruntime as ort
import pytest
import torch

import rednet
from deploy.cli import main as cli
from deploy.ort_session import create_session
from export import DOMAIN, ExportOptions, count_involutions, export, function_body, to_onnx
from export.involution_onnx import TRANSLATIONS
from helpers import assert_within_rounding_bound, randomise, random_epilogue, random_inputs, requires
from rednet.ops import involution

DEPTHS = {"rednet26": 9, "rednet38": 13, "rednet50": 17, "rednet101": 34, "rednet152": 51}


def ort_session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def max_rel_error(y, ref):
    return float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def dynamic_exports():
    """Each depth exported once with dynamic N/H/W, next to the randomised torch model it came from."""
    cache = {}

    def get(name):
        if name not in cache:
            model = randomise(rednet.create_model(name))
            cache[name] = model, to_onnx(ExportOptions(name, dynamic="all"), model=model)
        return cache[name]
    return get


@pytest.mark.parametrize("name", DEPTHS)
def test_one_node_per_involution_with_contract_attributes(name, dynamic_exports):
    model, proto = dynamic_exports(name)
    nodes = [n for n in proto.graph.node if n.op_type == "Involution"]
    assert len(nodes) == count_involutions(proto) == DEPTHS[name]
    assert all(n.domain == DOMAIN for n in nodes)
    assert {o.domain: o.version for o in proto.opset_import}[DOMAIN] == 1
    torch_layers = [m for m in model.modules() if isinstance(m, rednet.Involution)]
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node, layer in zip(nodes, torch_layers):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"kernel_size": layer.kernel_size, "stride": layer.stride,
                         "padding": (layer.kernel_size - 1) // 2, "dilation": 1, "groups": layer.groups,
                         "activation": 1, "plugin_version": b"1", "plugin_namespace": b""}
        # the BatchNorm after every involution is folded into the node's scale/shift (not ones/zeros)
        scale, shift = (initializers[name] for name in node.input[2:])
        assert scale.shape == shift.shape == (layer.channels,) and not np.allclose(scale, 1)
    # every RedNet involution is followed by BatchNorm + ReLU: all folded
    assert not {"BatchNormalization"} & {n.op_type for n in proto.graph.node}
    # everything else is standard ONNX
    assert {n.domain for n in proto.graph.node} == {"", DOMAIN}


def test_no_fuse_epilogue_keeps_batchnorm_and_identity_epilogue():
    model = randomise(rednet.create_model("rednet26"))
    proto = to_onnx(ExportOptions("rednet26", input_size=64, fuse_epilogue=False), model=model)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type == "Involution"]
    for node in nodes:
        assert {a.name: a.i for a in node.attribute if a.name == "activation"} == {"activation": 0}
        scale, shift = (initializers[name] for name in node.input[2:])
        assert (scale == 1).all() and (shift == 0).all()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).double().numpy()
    assert max_rel_error(ort_session(proto).run(None, {"input": x.numpy()})[0], ref) <= 1e-4


@pytest.mark.parametrize("name", DEPTHS)
def test_function_body_in_onnxruntime_matches_torch(name, dynamic_exports):
    model, proto = dynamic_exports(name)
    session = ort_session(proto)
    for batch, size in [(1, 224), (3, 224), (3, 161)]:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch * size))
        with torch.no_grad():
            ref = model(x).double().numpy()
        (y,) = session.run(None, {"input": x.numpy()})
        assert y.shape == ref.shape
        assert max_rel_error(y, ref) <= 1e-4, (batch, size)


def test_checker_shapes_and_names(dynamic_exports):
    _, proto = dynamic_exports("rednet26")
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    shapes = {v.name: v.type.tensor_type.shape for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for node in proto.graph.node:
        for out in node.output:
            assert out in shapes and len(shapes[out].dim) > 0 or node.op_type in ("Constant",), out
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    involution_out = next(n.output[0] for n in proto.graph.node if n.op_type == "Involution")
    inv_dims = [d.dim_param or d.dim_value for d in shapes[involution_out].dim]
    assert inv_dims[0] == dims[0] and inv_dims[1] == 32 and all(isinstance(d, str) for d in inv_dims[2:])


def test_dynamic_batch_from_one_file_and_metadata(tmp_path):
    model = randomise(rednet.create_model("rednet26"))
    torch.save({"meta": {}, "state_dict": model.state_dict()}, tmp_path / "r26.pth")
    out = export(ExportOptions("rednet26", checkpoint=str(tmp_path / "r26.pth"), input_size=64), tmp_path / "m.onnx")
    proto = onnx.load(out)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rednet.model"] == "rednet26" and meta["rednet.package_version"] == rednet.__version__
    assert meta["rednet.checkpoint_sha256"] == rednet.checkpoint.file_sha256(tmp_path / "r26.pth")
    assert json.loads(meta["rednet.export_options"])["dynamic"] == "batch"
    assert json.loads(meta["rednet.preprocess"])["mean"] == [123.675, 116.28, 103.53]
    session = ort_session(proto)
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x).double().numpy()
        assert max_rel_error(session.run(None, {"input": x.numpy()})[0], ref) <= 1e-4


def _single_node_model(kernel_size=3, stride=2, padding=1, dilation=1, groups=2, activation=0, c=32, h=9, w=8,
                       dtype=onnx.TensorProto.FLOAT):
    ho, wo = (rednet.ops.output_size(s, kernel_size, stride, padding, dilation) for s in (h, w))
    node = onnx.helper.make_node("Involution", ["x", "weight", "scale", "shift"], ["y"], domain=DOMAIN,
                                 kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups, activation=activation, plugin_version="1", plugin_namespace="")
    graph = onnx.helper.make_graph(
        [node], "involution",
        [onnx.helper.make_tensor_value_info("x", dtype, ["N", c, h, w]),
         onnx.helper.make_tensor_value_info("weight", dtype, ["N", groups * kernel_size ** 2, ho, wo]),
         onnx.helper.make_tensor_value_info("scale", dtype, [c]),
         onnx.helper.make_tensor_value_info("shift", dtype, [c])],
        [onnx.helper.make_tensor_value_info("y", dtype, ["N", c, ho, wo])])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                        onnx.helper.make_opsetid(DOMAIN, 1)],
                                  functions=[function_body()])


@pytest.mark.parametrize("attrs", [dict(), dict(kernel_size=5, stride=1, padding=4, dilation=2, groups=4, activation=1),
                                   dict(kernel_size=7, stride=2, padding=3, groups=1, h=11, w=13, activation=1)])
def test_onnx_reference_runs_the_function_body(attrs):
    proto = _single_node_model(**attrs)
    onnx.checker.check_model(proto, full_check=True)
    k = attrs.get("kernel_size", 3)
    args = (k, attrs.get("stride", 2), attrs.get("padding", 1), attrs.get("dilation", 1), attrs.get("groups", 2))
    x, weight = random_inputs(2, 32, attrs.get("h", 9), attrs.get("w", 8), *args)
    scale, shift = random_epilogue(32)
    (y,) = onnx.reference.ReferenceEvaluator(proto).run(None, {"x": x.numpy(), "weight": weight.numpy(),
                                                               "scale": scale.numpy(), "shift": shift.numpy()})
    assert_within_rounding_bound(y, x, weight, args, epilogue=(scale, shift, attrs.get("activation", 0)))


def test_onnx_reference_runs_an_exported_involution_layer():
    layer = rednet.Involution(32, 7, 2).eval()
    randomise(layer)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)

    program = torch.onnx.export(Wrapper().eval(), (torch.randn(1, 32, 13, 11),), dynamo=True, verbose=False,
                                custom_translation_table=__import__("export").involution_onnx.TRANSLATIONS)
    proto = program.model_proto
    proto.functions.append(function_body())
    x = torch.randn(1, 32, 13, 11)
    (y,) = onnx.reference.ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, layer(x).numpy(), rtol=1e-4, atol=1e-5)


class BareOp(torch.nn.Module):
    """Only the op, with attributes RedNet never uses, as the exporter's translation sees it; with an activation it
    takes scale/shift inputs (the fused epilogue), without one it omits them (the translation's ones/zeros)."""

    def __init__(self, attrs, activation):
        super().__init__()
        self.attrs, self.activation = attrs, activation

    def forward(self, x, weight, scale, shift):
        if self.activation:
            return involution(x, weight, *self.attrs, scale, shift, self.activation)
        return involution(x, weight, *self.attrs)


# (kernel_size, stride, padding, dilation, groups), activation, (N, C, H, W): each attribute off its default and off
# RedNet's values, all five sizes distinct within a case so that one written in another's place changes the result
ATTRIBUTE_CASES = [((3, 2, 4, 5, 6), 1, (2, 12, 13, 10)), ((5, 3, 0, 2, 4), 0, (1, 8, 14, 17)),
                   ((7, 1, 2, 3, 5), 1, (1, 10, 16, 19))]
OP_BACKENDS = ["onnx.reference", "onnxruntime-function", pytest.param("onnxruntime", marks=requires("ort_ops"))]


@functools.cache
def exported_op(attrs, activation, shape):
    """The exported one-op program (function body attached) and the inputs it was traced with."""
    x, weight = random_inputs(*shape, *attrs)
    scale, shift = random_epilogue(shape[1])
    proto = torch.onnx.export(BareOp(attrs, activation), (x, weight, scale, shift), dynamo=True, verbose=False,
                              custom_translation_table=TRANSLATIONS).model_proto
    proto.functions.append(function_body())
    return proto, (x, weight, scale, shift)


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("attrs,activation,shape", ATTRIBUTE_CASES, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else f"act{v}")
def test_translation_keeps_every_attribute(attrs, activation, shape, backend):
    """torch op → translation → node (+ function body) → each ONNX backend, against the fp64 unfold oracle."""
    proto, (x, weight, scale, shift) = exported_op(attrs, activation, shape)
    (node,) = [n for n in proto.graph.node if n.op_type == "Involution"]
    written = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert written == {**dict(zip(("kernel_size", "stride", "padding", "dilation", "groups"), attrs)),
                       "activation": activation, "plugin_version": b"1", "plugin_namespace": b""}
    feeds = dict(zip((i.name for i in proto.graph.input), (t.numpy() for t in (x, weight, scale, shift))))
    if backend == "onnx.reference":
        (y,) = onnx.reference.ReferenceEvaluator(proto).run(None, feeds)
    else:
        (y,) = create_session(proto, custom_ops=backend == "onnxruntime").run(None, feeds)
    # without an activation the op was called without scale/shift: the node carries ones/zeros
    assert_within_rounding_bound(y, x, weight, attrs, epilogue=(scale, shift, activation) if activation else None)


@pytest.mark.parametrize("opset", [20, 21])
def test_other_opsets(opset):
    model = randomise(rednet.create_model("rednet26"))
    proto = to_onnx(ExportOptions("rednet26", input_size=64, opset=opset), model=model)
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset and count_involutions(proto) == 9
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).double().numpy()
    assert max_rel_error(ort_session(proto).run(None, {"input": x.numpy()})[0], ref) <= 1e-4


def test_no_function_leaves_only_the_node(tmp_path):
    proto = to_onnx(ExportOptions("rednet26", with_function=False, input_size=64))
    assert len(proto.functions) == 0 and count_involutions(proto) == 9


def test_fp16_model_agrees_with_fp32_torch():
    """fp16 weights, I/O and Involution nodes; ONNX Runtime CPU runs it (function body, fp32 accumulation)."""
    model = randomise(rednet.create_model("rednet50"))
    proto = to_onnx(ExportOptions("rednet50", precision="fp16"), model=model)
    fp16 = onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == fp16
    assert proto.graph.output[0].type.tensor_type.elem_type == fp16
    assert all(t.data_type == fp16 for t in proto.graph.initializer if t.data_type in (fp16, onnx.TensorProto.FLOAT))
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    assert all(types[n.output[0]] == fp16 for n in proto.graph.node if n.op_type == "Involution")
    session = ort_session(proto)
    x = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).double().numpy()
    y = np.concatenate([session.run(None, {"input": x[i:i + 16].half().numpy()})[0] for i in range(0, 64, 16)])
    y = y.astype(np.float64)
    cosine = (y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1)
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert cosine.min() >= 0.999


def test_cli_export_replaces_atomically_and_reports_errors(tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def broken_save(model, path, *a, **k):
        open(path, "wb").write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(onnx, "save", broken_save)
    assert cli(["export", "rednet26", "--input-size", "64", "--out", str(out)]) == 2  # an OSError writing OUT
    assert "error: disk full" in capsys.readouterr().err
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.undo()

    assert cli(["export", "rednet26", "--input-size", "64", "--out", str(out)]) == 0
    assert count_involutions(onnx.load(out)) == 9
    umask = __import__("os").umask(0)
    __import__("os").umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0600

    assert cli(["export", "rednet51", "--out", str(out)]) == 2
    assert "available: rednet26" in capsys.readouterr().err
    torch.save({"state_dict": {"head.fc.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pth")
    assert cli(["export", "rednet26", "--checkpoint", str(tmp_path / "bad.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing keys" in err and "head.fc.weight: checkpoint (3, 3) vs model (1000, 2048)" in err
