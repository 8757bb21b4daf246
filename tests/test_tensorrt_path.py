"""Our logic around TensorRT (profile, sidecar checks, library discovery, error paths), testable without it.
None of this claims TensorRT works: the lines that need a real TensorRT are listed in the issue note."""
import importlib.util
import json

import numpy as np
import pytest

from deploy import native
from deploy.backends import create_backend
from deploy.cli import main as cli
from deploy.errors import MissingBackend
from deploy.tensorrt_backend import (EngineMismatch, Profile, check_sidecar, load_sidecar, make_profile,
                                     make_sidecar, onnx_input_dims, require_tensorrt, sidecar_path)
from export import ExportOptions, export

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_profile_from_static_and_dynamic_inputs():
    assert make_profile(["batch", 3, 224, 224], 1, 8, 32) == \
        Profile((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert make_profile(["batch", 3, "height", "width"], 2, 4, 16, size=(128, 224, 320)) == \
        Profile((2, 3, 128, 128), (4, 3, 224, 224), (16, 3, 320, 320))


@pytest.mark.parametrize("bounds,needle", [((0, 8, 32), "min (0)"), ((8, 4, 32), "opt (4)"), ((1, 8, 4), "max (4)")])
def test_profile_rejects_bad_bounds(bounds, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        make_profile(["batch", 3, 224, 224], *bounds)


def test_profile_contains():
    p = Profile((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert p.contains((1, 3, 224, 224)) and p.contains((32, 3, 224, 224))
    assert not p.contains((33, 3, 224, 224)) and not p.contains((4, 3, 225, 224)) and not p.contains((4, 3, 224))
    p.check((8, 3, 224, 224))
    with pytest.raises(ValueError, match=r"input shape \(33, 3, 224, 224\) is outside the engine's profile"):
        p.check((33, 3, 224, 224))


def test_input_dims_of_exported_files(tmp_path):
    batch = export(ExportOptions("rednet26", input_size=64), tmp_path / "b.onnx")
    assert onnx_input_dims(batch) == ["batch", 3, 64, 64]
    dynamic = export(ExportOptions("rednet26", dynamic="all", input_size=64), tmp_path / "a.onnx")
    dims = onnx_input_dims(dynamic)
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


@pytest.fixture
def built(tmp_path):
    plugin = tmp_path / "librednet_trt_plugin.so"
    plugin.write_bytes(b"plugin v1")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx")
    env = {"tensorrt_version": "10.16.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    profile = Profile((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    sidecar = make_sidecar(env, plugin, onnx_file, "fp16", profile, strongly_typed=True)
    engine = tmp_path / "m.plan"
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return env, plugin, engine, sidecar


def test_sidecar_records_what_the_engine_needs(built):
    env, plugin, engine, sidecar = built
    loaded = load_sidecar(engine)
    assert loaded["tensorrt_version"] == "10.16.0" and loaded["precision"] == "fp16"
    assert len(loaded["plugin_sha256"]) == 64 and len(loaded["onnx_sha256"]) == 64
    assert loaded["profile"]["input"]["max"] == [32, 3, 224, 224]
    check_sidecar(loaded, env, plugin, engine)  # same machine: accepted


@pytest.mark.parametrize("change,needle", [
    ({"tensorrt_version": "11.1.0"}, "TensorRT: engine built with '10.16.0', this machine has '11.1.0'"),
    ({"gpu": "NVIDIA H200"}, "GPU: engine built with 'NVIDIA H100 80GB HBM3'"),
    ({"compute_capability": "8.0"}, "compute capability"),
])
def test_sidecar_refuses_other_machines(built, change, needle):
    env, plugin, engine, sidecar = built
    with pytest.raises(EngineMismatch) as info:
        check_sidecar(sidecar, {**env, **change}, plugin, engine)
    assert needle in str(info.value) and "rebuild it: make engine" in str(info.value)


def test_sidecar_refuses_another_plugin_build(built):
    env, plugin, engine, sidecar = built
    plugin.write_bytes(b"plugin v2")
    with pytest.raises(EngineMismatch, match="plugin library: engine built with sha256"):
        check_sidecar(sidecar, env, plugin, engine)


def test_engine_without_sidecar_is_refused(tmp_path):
    with pytest.raises(EngineMismatch, match="no sidecar"):
        load_sidecar(tmp_path / "foreign.plan")


def test_library_discovery(tmp_path, monkeypatch):
    monkeypatch.setenv("REDNET_TRT_PLUGIN_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(native.LibraryNotFound, match="REDNET_TRT_PLUGIN_LIB=.*does not exist"):
        native.find_library("trt_plugin")
    (tmp_path / "mine.so").write_bytes(b"")
    monkeypatch.setenv("REDNET_TRT_PLUGIN_LIB", str(tmp_path / "mine.so"))
    assert native.find_library("trt_plugin") == tmp_path / "mine.so"
    monkeypatch.delenv("REDNET_TRT_PLUGIN_LIB")
    monkeypatch.setattr(native, "BUILD_DIR", tmp_path)
    assert native.find_library("trt_plugin", required=False) is None
    with pytest.raises(native.LibraryNotFound, match="make plugins"):
        native.find_library("trt_plugin")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the missing-TensorRT path cannot be shown")
def test_without_tensorrt_engine_and_backend_fail_cleanly(capsys):
    assert cli(["engine", "rednet50"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT is not installed" in err[0] and "pip install tensorrt" in err[0]
    with pytest.raises(MissingBackend, match="TensorRT is not installed"):
        create_backend("tensorrt", engine="artifacts/x.plan")
    with pytest.raises(MissingBackend):
        require_tensorrt()


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: torch, onnxruntime, onnxruntime-function, tensorrt"):
        create_backend("openvino")


def test_backends_share_one_call_shape(tmp_path):
    import rednet
    model = rednet.create_model("rednet26").eval()
    from export import to_onnx
    proto = to_onnx(ExportOptions("rednet26", input_size=64), model=model)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    outs = {name: create_backend(name, **({"model": model} if name == "torch" else {"onnx_model": proto}))(x)
            for name in ("torch", "onnxruntime-function")}
    if native.find_library("ort_ops", required=False):
        outs["onnxruntime"] = create_backend("onnxruntime", onnx_model=proto)(x)
    for name, y in outs.items():
        assert isinstance(y, np.ndarray) and y.shape == (2, 1000), name
        np.testing.assert_allclose(y, outs["torch"], rtol=1e-4, atol=1e-4 * np.abs(outs["torch"]).max())
