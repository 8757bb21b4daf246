"""Triton model repository generation (our logic around an engine): configs validated with Triton's own
ModelConfig protobuf, batch bounds from the engine's profile, only plans that carry the plugin (Triton's TensorRT
backend cannot register it from outside), the launch script in version-compatible mode, no partial repository."""
import json
import os
import shutil

import pytest
from google.protobuf import text_format

from deploy.cli import main as cli
from deploy.tensorrt_backend import Profile, make_sidecar, onnx_involution_count, sidecar_path
from deploy.triton_repo import validate_config, write_repository
from export import ExportOptions, export
from helpers import requires


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export(ExportOptions("rednet26", input_size=64), tmp_path_factory.mktemp("onnx") / "rednet26.onnx")


@pytest.fixture
def engine(tmp_path, monkeypatch, exported):
    plugin = tmp_path / "librednet_trt_plugin.so"
    plugin.write_bytes(b"stand-in for the built plugin")
    monkeypatch.setenv("REDNET_TRT_PLUGIN_LIB", str(plugin))
    onnx_path = tmp_path / "rednet26.onnx"
    shutil.copyfile(exported, onnx_path)
    plan = tmp_path / "rednet26.fp32.plan"
    plan.write_bytes(b"stand-in for a serialised engine")
    env = {"tensorrt_version": "10.16.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    profile = Profile((1, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64))
    sidecar = make_sidecar(env, plugin, onnx_path, "fp32", profile, True)
    sidecar.update(embedded_plugin=True, plugin_layers=onnx_involution_count(onnx_path), tf32=False)
    sidecar_path(plan).write_text(json.dumps(sidecar))
    return plan, onnx_path


def test_tensorrt_repository(engine, tmp_path):
    plan, onnx_path = engine
    out = write_repository("rednet26", plan, tmp_path / "repo")
    config = validate_config((out / "models/rednet26/config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert list(config.input[0].dims) == [3, 64, 64] and list(config.output[0].dims) == [1000]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert max(config.dynamic_batching.preferred_batch_size) == 16
    assert (out / "models/rednet26/1/model.plan").read_bytes() == plan.read_bytes()
    launch = (out / "launch.sh").read_text()
    assert "--backend-config=tensorrt,version-compatible=true" in launch and os.access(out / "launch.sh", os.X_OK)
    assert "plugins=" not in launch  # the plan carries the plugin; a dlopen'ed copy would never be registered
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".repo")) == []  # no staging left


def test_plan_without_the_plugin_is_refused(engine, tmp_path):
    plan, _ = engine
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar["embedded_plugin"] = False
    sidecar_path(plan).write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"does not carry the plugin library.*make engine MODEL=rednet26 TRITON=1"):
        write_repository("rednet26", plan, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_failed_write_leaves_no_partial_repository(engine, tmp_path):
    plan, onnx_path = engine
    good = write_repository("rednet26", plan, tmp_path / "repo")
    before = sorted(str(p.relative_to(good)) for p in good.rglob("*"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar["onnx"] = str(broken)  # fails inside the staging folder, while the repository is being written
    sidecar_path(plan).write_text(json.dumps(sidecar))
    with pytest.raises(Exception):
        write_repository("rednet26", plan, tmp_path / "repo")
    with pytest.raises(Exception):
        write_repository("rednet26", plan, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert sorted(str(p.relative_to(good)) for p in good.rglob("*")) == before  # the old one is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_repository_is_replaced_whole(engine, tmp_path):
    plan, _ = engine
    out = tmp_path / "repo"
    write_repository("rednet26", plan, out)
    (out / "models" / "leftover").mkdir()
    write_repository("rednet26", plan, out, max_batch=8)
    assert not (out / "models" / "leftover").exists()
    assert validate_config((out / "models/rednet26/config.pbtxt").read_text()).max_batch_size == 8


@requires("ort_ops")
def test_onnxruntime_variant_uses_our_op_library(engine, tmp_path):
    plan, onnx_path = engine
    out = write_repository("rednet26", plan, tmp_path / "repo", onnx_path=onnx_path, max_batch=8)
    config = validate_config((out / "models/rednet26_onnx/config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert list(config.model_operations.op_library_filename) == ["plugins/librednet_ort_ops.so"]
    assert (out / "plugins/librednet_ort_ops.so").is_file() and (out / "models/rednet26_onnx/1/model.onnx").is_file()


def test_batch_outside_the_profile_is_refused(engine, tmp_path):
    plan, _ = engine
    with pytest.raises(ValueError, match=r"max_batch 64 is outside the engine profile \(1..16\)"):
        write_repository("rednet26", plan, tmp_path / "repo", max_batch=64)
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar["profile"]["input"]["min"][0] = 4
    sidecar_path(plan).write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="starts at batch 4"):
        write_repository("rednet26", plan, tmp_path / "repo")


def test_validation_is_the_protobuf_schema():
    with pytest.raises(text_format.ParseError, match="no_such_field"):
        validate_config('name: "m"\nplatform: "tensorrt_plan"\nno_such_field: 1\n')
    with pytest.raises(ValueError, match="outside the engine profile"):
        validate_config('name: "m"\nmax_batch_size: 64\ninput [{name: "i" data_type: TYPE_FP32 dims: [3]}]\n'
                        'output [{name: "o" data_type: TYPE_FP32 dims: [3]}]\n', max_batch_limit=16)


def test_cli_missing_engine(tmp_path, capsys):
    assert cli(["triton-repo", "rednet26", "--engine", str(tmp_path / "none.plan")]) == 2
    assert "make engine" in capsys.readouterr().err
