"""The parity suite: all five depths against PyTorch on every backend present, and its verdict logic."""
import json

import numpy as np
import pytest

from deploy import parity
from deploy.cli import main as cli
from deploy.tensorrt_backend import unavailable_reason
from helpers import requires

DEPTHS = ["rednet26", "rednet38", "rednet50", "rednet101", "rednet152"]


@requires("ort_ops")
@pytest.mark.parametrize("name", DEPTHS)
def test_every_depth_within_fp32_tolerance(name):
    """Every backend present gets a row per (batch, size): TensorRT too where it and a GPU exist, else the report
    names why it is absent."""
    report = parity.run_parity(name, batches=(1, 3), sizes=(224, 161))
    expected = {"onnxruntime", "onnxruntime-function"}
    tensorrt_missing = unavailable_reason()
    if tensorrt_missing is None:
        expected.add("tensorrt")
        assert "tensorrt" not in report.skipped
    else:
        assert report.skipped == {"tensorrt": tensorrt_missing}
    assert sorted(r.backend for r in report.results) == sorted(list(expected) * 4)
    assert {(r.batch, r.size) for r in report.results} == {(1, 224), (1, 161), (3, 224), (3, 161)}
    assert report.passed, report.table()


class Broken:
    name = "broken"
    input_dtype = np.dtype(np.float32)

    def __init__(self, inner, noise):
        self.inner, self.noise = inner, noise

    def __call__(self, batch):
        y = self.inner(batch)
        return y + self.noise * np.abs(y).max()


def test_verdict_uses_the_tolerances():
    ok = parity.Metrics.of(np.array([[1.0, 2.0]]), np.array([[1.0, 2.00001]]))
    assert ok.within("fp32") and ok.max_rel == pytest.approx(5e-6, rel=1e-3)
    bad = parity.Metrics.of(np.array([[1.0, 2.0]]), np.array([[1.0, 2.001]]))
    assert not bad.within("fp32") and bad.within("fp16")
    flipped = parity.Metrics.of(np.array([[2.0, 1.0]]), np.array([[1.0, 2.0]]))
    assert flipped.top1_agreement == 0 and not flipped.within("fp16")


def test_cli_exit_code_1_and_json_when_a_backend_is_outside(tmp_path, monkeypatch, capsys):
    """One backend within tolerance, one outside: the verdict is the worst row's."""
    def broken_backends(onnx_path, precision, engine=None, tf32=False):
        function_body = parity.OnnxRuntimeBackend(onnx_path, custom_ops=False)
        return [function_body, Broken(function_body, 1e-3)], {"tensorrt": "not here"}
    monkeypatch.setattr(parity, "parity_backends", broken_backends)
    report_path = tmp_path / "r.json"
    code = cli(["parity", "rednet26", "--batch", "2", "--size", "64", "--report", str(report_path)])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "broken" in out
    data = json.loads(report_path.read_text())
    assert data["passed"] is False and data["tolerances"] == {"max_rel": 1e-4}
    assert {(r["batch"], r["size"]) for r in data["results"]} == {(2, 64)}  # what --batch and --size asked for
    assert data["summary"]["broken"]["max_rel"] > 1e-4 and data["skipped"] == {"tensorrt": "not here"}
    assert data["summary"]["onnxruntime-function"]["passed"] is True and data["summary"]["broken"]["passed"] is False


def test_onnx_from_other_weights_is_refused(tmp_path, capsys):
    from export import ExportOptions, export
    path = export(ExportOptions("rednet26", input_size=64), tmp_path / "random.onnx")
    assert cli(["parity", "rednet26", "--onnx", str(path), "--size", "64"]) == 2
    assert "random weights" in capsys.readouterr().err
