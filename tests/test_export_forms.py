"""Export forms beyond the default: floor-mode kernel-generation pools at static sizes, and the inlined variant."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import rednet
from deploy.cli import main as cli
from export import DOMAIN, ExportOptions, count_involutions, default_output_path, to_onnx
from helpers import randomise

RELATIVE_TOLERANCE = 1e-5  # fp32 end to end: same math in another order, far from any fp16/TF32 rounding


def run_plain_onnxruntime(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_matches_torch(model, proto, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        ref = model(x).numpy()
    y = run_plain_onnxruntime(proto, x.numpy())
    assert np.abs(y - ref).max() <= RELATIVE_TOLERANCE * np.abs(ref).max()


def pool_ceil_modes(proto):
    return [next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "ceil_mode"), 0)
            for n in proto.graph.node if n.op_type == "AveragePool"]


@pytest.fixture(scope="module")
def model():
    return randomise(rednet.create_model("rednet26")).eval()


@pytest.mark.parametrize("size", [64, 72])
def test_fixed_size_pools_use_floor_mode_exactly_where_it_equals_ceil(model, size):
    # rednet26's stride-2 involutions see size/4, size/8, size/16 (stem /4, then /2 per stage): 64 → 16, 8, 4;
    # 72 → 18, 9, 5, where the odd sizes need ceil mode to give the op's output size.
    stage_inputs = [size // 4, size // 8, size // 16] if size == 64 else [18, 9, 5]
    proto = to_onnx(ExportOptions("rednet26", input_size=size), model=model)
    assert pool_ceil_modes(proto) == [int(s % 2 != 0) for s in stage_inputs]
    assert_matches_torch(model, proto, size)


def test_dynamic_size_pools_keep_ceil_mode(model):
    proto = to_onnx(ExportOptions("rednet26", dynamic="all", input_size=64), model=model)
    assert pool_ceil_modes(proto) == [1, 1, 1]
    assert_matches_torch(model, proto, 72)


def test_inlined_export_has_only_standard_ops_and_matches_torch(model):
    proto = to_onnx(ExportOptions("rednet26", inline_function=True, input_size=64), model=model)
    assert count_involutions(proto) == 0
    assert not proto.functions
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert DOMAIN not in {o.domain for o in proto.opset_import}
    assert_matches_torch(model, proto, 64)


def test_inlined_export_default_path_and_refusals(tmp_path, capsys):
    assert default_output_path(ExportOptions("rednet50", inline_function=True)).name == "rednet50.inlined.onnx"
    with pytest.raises(ValueError, match="inline_function"):
        ExportOptions("rednet26", with_function=False, inline_function=True).validate()
    code = cli(["export", "rednet26", "--no-function", "--inline-function", "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "inline_function" in capsys.readouterr().err


def test_openvino_runs_the_inlined_export_but_not_the_default(model, tmp_path):
    import openvino
    core = openvino.Core()
    default = tmp_path / "default.onnx"
    onnx.save(to_onnx(ExportOptions("rednet26", input_size=64), model=model), default)
    with pytest.raises(Exception, match="rednet.Involution"):  # OpenVINO ignores model-local functions
        core.read_model(default)
    inlined = tmp_path / "inlined.onnx"
    onnx.save(to_onnx(ExportOptions("rednet26", inline_function=True, input_size=64), model=model), inlined)
    # OpenVINO's CPU plugin computes in bf16 where the CPU has it unless told otherwise
    compiled = core.compile_model(core.read_model(inlined), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    y = compiled(x.numpy())[0]
    assert np.abs(y - ref).max() <= RELATIVE_TOLERANCE * np.abs(ref).max()
