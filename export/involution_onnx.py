"""ONNX form of the involution op: the `rednet::Involution` node, its schema and its portable function body.

The node mirrors spec/Involution.yaml (inputs x, weight, scale, shift; int attributes kernel_size, stride, padding,
dilation, groups, activation) and carries TensorRT's routing attributes plugin_version / plugin_namespace, so
TensorRT's ONNX parser picks our plugin. The model-local function of the same name gives every ONNX runtime (and
onnx.reference) a standard-op implementation: gather the K×K taps (the unfold formulation), multiply by the kernel,
sum in fp32, then the epilogue (scale, shift, ReLU when activation is 1).

scale and shift are required inputs (ONNX Runtime rejects a local function whose body reads an omitted optional
input): a node without a fused BatchNorm gets ones and zeros.

The exporter's translation emits the plain node (its opset version pass would inline a function call), and
``export.exporter`` attaches the function body afterwards.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnxscript
import torch
from typing import TypeVar, Union

from onnxscript import FLOAT, FLOAT16
from onnxscript import opset18 as op

from rednet.ops import load_spec

SPEC = load_spec()
DOMAIN, VERSION = SPEC["domain"], SPEC["version"]
TRT = SPEC["tensorrt"]
rednet_opset = onnxscript.values.Opset(DOMAIN, VERSION)
TFloat = TypeVar("TFloat", bound=Union[FLOAT, FLOAT16])
ONNX_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)"}


def _register_schema() -> None:
    """Register rednet::Involution with ONNX's schema registry, built from the spec (once per process)."""
    if onnx.defs.has(SPEC["name"], VERSION, DOMAIN):
        return
    schema = onnx.defs.OpSchema(
        SPEC["name"], DOMAIN, VERSION, SPEC["semantics"],
        inputs=[onnx.defs.OpSchema.FormalParameter(i["name"], "T") for i in SPEC["inputs"]],
        outputs=[onnx.defs.OpSchema.FormalParameter(o["name"], "T") for o in SPEC["outputs"]],
        type_constraints=[("T", [ONNX_TYPES[t] for t in SPEC["dtypes"]], "x, weight and y share one type")],
        attributes=[onnx.defs.OpSchema.Attribute(name, onnx.helper.make_attribute(name, rule["default"]))
                    if "default" in rule else onnx.defs.OpSchema.Attribute(name, onnx.defs.OpSchema.AttrType.INT,
                                                                           required=True)
                    for name, rule in SPEC["attributes"].items()]
        + [onnx.defs.OpSchema.Attribute(name, onnx.helper.make_attribute(name, TRT[name]))
           for name in ("plugin_version", "plugin_namespace")],
    )
    onnx.defs.register_schema(schema)


_register_schema()


@onnxscript.script(onnxscript.values.Opset(DOMAIN, VERSION), default_opset=op)
def Involution(x: TFloat, weight: TFloat, scale: TFloat, shift: TFloat, kernel_size: int, stride: int, padding: int,
               dilation: int, groups: int, activation: int = 0, plugin_version: str = "1",
               plugin_namespace: str = "") -> TFloat:
    k = op.Constant(value_int=kernel_size)
    s = op.Constant(value_int=stride)
    p = op.Reshape(op.Constant(value_int=padding), op.Constant(value_ints=[1]))
    d = op.Constant(value_int=dilation)
    g = op.Reshape(op.Constant(value_int=groups), op.Constant(value_ints=[1]))
    zero = op.Constant(value_int=0)
    one = op.Constant(value_int=1)
    zeros2 = op.Constant(value_ints=[0, 0])
    n = op.Shape(x, start=0, end=1)
    c = op.Shape(x, start=1, end=2)
    out_h = op.Shape(weight, start=2, end=3)
    out_w = op.Shape(weight, start=3, end=4)
    taps = op.Reshape(op.Mul(k, k), op.Constant(value_ints=[1]))

    x_pad = op.Pad(x, op.Concat(zeros2, p, p, zeros2, p, p, axis=0))
    # input row (col) read by tap kh at output row ho: ho*stride + kh*dilation  -> (K, Ho)
    tap_offsets = op.Unsqueeze(op.Mul(op.Range(zero, k, one), d), op.Constant(value_ints=[1]))
    rows = op.Add(tap_offsets, op.Unsqueeze(op.Mul(op.Range(zero, op.Squeeze(out_h), one), s), zeros2[0:1]))
    cols = op.Add(tap_offsets, op.Unsqueeze(op.Mul(op.Range(zero, op.Squeeze(out_w), one), s), zeros2[0:1]))
    patches = op.Gather(op.Gather(x_pad, rows, axis=2), cols, axis=4)  # (N, C, K, Ho, K, Wo)
    patches = op.Transpose(patches, perm=[0, 1, 2, 4, 3, 5])          # (N, C, K, K, Ho, Wo)
    minus_one = op.Constant(value_ints=[-1])
    patches = op.Reshape(patches, op.Concat(n, g, minus_one, taps, out_h, out_w, axis=0))
    kernel = op.Reshape(weight, op.Concat(n, g, op.Constant(value_ints=[1]), taps, out_h, out_w, axis=0))
    summed = op.ReduceSum(op.Mul(op.Cast(patches, to=FLOAT.dtype), op.Cast(kernel, to=FLOAT.dtype)),
                          op.Constant(value_ints=[3]), keepdims=0)
    per_channel = op.Constant(value_ints=[1, -1, 1, 1])
    normalized = op.Add(op.Mul(op.Reshape(summed, op.Concat(n, c, out_h, out_w, axis=0)),
                               op.Reshape(op.Cast(scale, to=FLOAT.dtype), per_channel)),
                        op.Reshape(op.Cast(shift, to=FLOAT.dtype), per_channel))
    relu = op.Cast(op.Constant(value_int=activation), to=onnxscript.BOOL.dtype)
    return op.CastLike(op.Where(relu, op.Relu(normalized), normalized), x)


def identity_epilogue(channels: int, elem_type: int) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    """scale = ones and shift = zeros of C values: the epilogue of a node with nothing fused."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return (onnx.numpy_helper.from_array(np.ones(channels, dtype), "scale"),
            onnx.numpy_helper.from_array(np.zeros(channels, dtype), "shift"))


def involution_translation(x, weight, kernel_size: int, stride: int, padding: int, dilation: int, groups: int,
                           scale=None, shift=None, activation: int = 0):
    """torch.ops.rednet.involution → one rednet::Involution node (its function body is added to the model).

    An omitted scale/shift becomes a constant of ones/zeros over x's channel count (static in every RedNet).
    """
    if scale is None or shift is None:
        channels = x.shape[1] if x.shape is not None else None
        if not isinstance(channels, int):
            raise ValueError(f"involution: exporting without scale/shift needs a static channel count, x has {x.shape}")
        ones, zeros = identity_epilogue(channels, x.dtype.value)
        scale = op.Constant(value=ones) if scale is None else scale
        shift = op.Constant(value=zeros) if shift is None else shift
    return rednet_opset.Involution(x, weight, scale, shift, kernel_size=kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=groups, activation=activation,
                                   plugin_version=TRT["plugin_version"], plugin_namespace=TRT["plugin_namespace"])


TRANSLATIONS = {torch.ops.rednet.involution.default: involution_translation}


def single_node_model(attributes: dict, elem_type: int = onnx.TensorProto.FLOAT,
                      with_function: bool = True) -> onnx.ModelProto:
    """One rednet::Involution node (inputs x, weight, scale, shift; output y; dynamic shapes) for op tests and
    benchmarks.

    ``attributes`` maps names to values; the routing attributes are added; a None value omits that attribute.
    """
    attrs = {**attributes, "plugin_version": TRT["plugin_version"], "plugin_namespace": TRT["plugin_namespace"]}
    inputs = [i["name"] for i in SPEC["inputs"]]
    node = onnx.helper.make_node(SPEC["name"], inputs, ["y"], domain=DOMAIN,
                                 **{k: v for k, v in attrs.items() if v is not None})
    graph = onnx.helper.make_graph(
        [node], "involution",
        [onnx.helper.make_tensor_value_info(name, elem_type, None) for name in inputs],
        [onnx.helper.make_tensor_value_info("y", elem_type, None)])
    return onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid(DOMAIN, VERSION)],
        functions=[Involution.to_function_proto()] if with_function else [])
