"""The CPU benchmark's analysis: the involution-free floor model and the profile's split by role in RedNet."""
import pytest
import torch

import rednet
from deploy.bench.cpu import graph_roles, node_role, without_involutions
from export import ExportOptions, to_onnx


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_the_floor_model_drops_every_involution_and_the_batchnorm_it_folds_and_keeps_every_shape():
    model = rednet.create_model("rednet26").eval()
    involutions, batchnorms = count(model, rednet.Involution), count(model, torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = [f.shape for f in model.backbone(x)]
        floor = without_involutions(model)
        assert [f.shape for f in floor.backbone(x)] == expected
    assert count(floor, rednet.Involution) == 0
    # each involution folded the BatchNorm after it; the ones inside its kernel generation went with it
    assert count(floor, torch.nn.BatchNorm2d) == batchnorms - 2 * involutions


def test_graph_roles_find_each_involutions_kernel_generation():
    proto = to_onnx(ExportOptions("rednet26"), model=rednet.create_model("rednet26").eval())
    involutions = [n for n in proto.graph.node if n.op_type == "Involution"]
    roles = graph_roles(proto)
    producers = {n.output[0]: n for n in proto.graph.node}
    assert {producers[n.input[1]].name for n in involutions} <= roles["span"]
    assert len(roles["span"]) == 2 * len(involutions)  # each span conv by node name and by output name
    for n in involutions:
        span_input = producers[n.input[1]].input[0]
        assert span_input in roles["reduce"], f"{n.name}: the reduce conv's output {span_input} has no role"
        relu = producers[span_input]
        assert relu.op_type == "Relu" and producers[relu.input[0]].name in roles["reduce"]  # the unfused conv's name
    assert roles["kernel_channels"] == {18, 196, 392, 784, 1568}  # G·K²: the stem (K3, 2 groups), then K7 per stage


def event(op, name, channels=64):
    return {"name": f"{name}_kernel_time", "args": {"op_name": op, "output_type_shape": [{"float": [1, channels, 7, 7]}]}}


@pytest.mark.parametrize("e, role", [
    (event("Conv", "span_out_nchwc"), "kernel generation: span conv"),
    (event("FusedConv", "reduce_relu_nchwc"), "kernel generation: reduce conv"),
    (event("Conv", "main"), "conv, main path"),
    (event("ReorderOutput", "ReorderOutput_token_1", channels=196), "reorder of a generated kernel"),
    (event("ReorderOutput", "ReorderOutput_token_2", channels=64), "other reorders"),
    (event("Involution", "node_involution"), "involution op"),
    (event("MaxPool", "pool"), "other"),
])
def test_profiler_events_get_their_role(e, role):
    roles = {"span": {"span_out"}, "reduce": {"reduce_relu"}, "kernel_channels": {196}}
    assert node_role(e, roles) == role
