"""The CPU benchmark's analysis: the involution-free floor model and the profile's split by role in RedNet."""
import pytest
import torch

import rednet
from deploy.bench.cpu import (FLOOR_MODEL, evaluate_targets, graph_roles, involution_by_shape, node_role, ratios,
                              without_involutions)
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
    shape = [{"float": [1, channels, 7, 7]}]
    return {"name": f"{name}_kernel_time", "args": {"op_name": op, "output_type_shape": shape}}


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


def model_row(model, runtime, batch, ms):
    return {"model": model, "runtime": runtime, "batch": batch, "median_ms": ms, "round_medians_ms": [ms] * 3}


def test_targets_report_each_batch_and_the_involution_branch_against_what_the_target_allows():
    rows = []
    for batch, scale in ((1, 1), (8, 8)):
        rows += [model_row("resnet50", "onnxruntime", batch, 30.0 * scale),
                 model_row("rednet50", "onnxruntime", batch, 27.0 * scale),
                 model_row(FLOOR_MODEL, "onnxruntime", batch, 18.0 * scale),
                 model_row("rednet50", "torch.compile", batch, (40.0 if batch == 1 else 30.0) * scale),
                 model_row("resnet50", "torch eager", batch, 60.0 * scale),
                 model_row("rednet50", "torch eager", batch, 57.0 * scale)]
    op = [{"x": [1, 64, 56, 56], "kernel_size": 7, "stride": 1, "gmac_per_s_ours": 80.0},
          {"x": [1, 32, 112, 112], "kernel_size": 3, "stride": 1, "gmac_per_s_ours": 40.0}]
    met = evaluate_targets(rows, ratios(rows), op, gemm_gmac_per_s=160.0)
    ort = met["rednet50_over_resnet50_onnxruntime"]
    assert ort["values"] == {1: pytest.approx(0.9), 8: pytest.approx(0.9)} and ort["met"] is False
    assert ort["involution_branch_ms"] == {1: pytest.approx(9.0), 8: pytest.approx(72.0)}
    assert ort["branch_ms_the_target_allows"] == {1: pytest.approx(3.0), 8: pytest.approx(24.0)}
    compiled = met["torch_compile_over_ours"]
    assert compiled["values"] == {1: pytest.approx(40 / 27), 8: pytest.approx(30 / 27)}
    assert compiled["met"] is False  # batch 8 misses 1.3 while batch 1 makes it
    assert met["rednet50_over_resnet50_torch_eager"] == {"values": {1: pytest.approx(0.95), 8: pytest.approx(0.95)},
                                                        "met": True}
    assert met["op_fraction_of_gemm"]["values"] == {"64x56^2 K7 s1": 0.5, "32x112^2 K3 s1": 0.25}
    assert met["op_fraction_of_gemm"]["met"] is False


def test_no_measurement_is_not_a_met_target():
    met = evaluate_targets([], {}, [], gemm_gmac_per_s=160.0)
    assert not any(v["met"] for v in met.values())


def op_event(name, dur_us, x_shape, w_shape, dtype="float"):
    shapes = [{dtype: x_shape}, {dtype: w_shape}, {dtype: [x_shape[1]]}, {dtype: [x_shape[1]]}]
    return {"name": f"{name}_kernel_time", "dur": dur_us, "args": {"op_name": "Involution", "input_type_shape": shapes}}


def test_the_op_in_the_model_is_grouped_by_shape_with_its_rates():
    runs = 2
    events = [op_event(f"inv{i}", 1000 * (1 + i % 2), [8, 64, 56, 56], [8, 4 * 49, 56, 56])
              for i in range(3) for _ in range(runs)]  # 3 nodes of one shape: 1, 2, 1 ms per run
    events += [op_event("stem", 500, [1, 32, 112, 112], [1, 2 * 9, 112, 112], "float16")] * runs
    events += [{"name": "conv_kernel_time", "dur": 9e9, "args": {"op_name": "Conv"}}]
    rows = {r["x"][1]: r for r in involution_by_shape(events, runs, {"inv0": 7, "inv1": 7, "inv2": 7, "stem": 3})}
    big, stem = rows[64], rows[32]
    assert big["nodes"] == 3 and big["ms_per_node"] == pytest.approx(4 / 3)
    macs = 8 * 64 * 56 * 56 * 49
    assert big["gmac_per_s"] == pytest.approx(macs / (4 / 3 * 1e-3) / 1e9)
    moved = 4 * (8 * 64 * 56 * 56 * 2 + 8 * 196 * 56 * 56)  # x read, y written, the generated kernel read
    assert big["bytes_moved"] == moved and big["gb_per_s"] == pytest.approx(moved / (4 / 3 * 1e-3) / 1e9)
    assert stem["nodes"] == 1 and stem["ms_per_node"] == pytest.approx(0.5)
    assert stem["gmac_per_s"] == pytest.approx(32 * 112 * 112 * 9 / 0.5e-3 / 1e9)  # its own K = 3
    assert stem["bytes_moved"] == 2 * (32 * 112 * 112 * 2 + 18 * 112 * 112)  # fp16: 2 bytes an element
