"""Hypothesis over the CLI's arguments, environment settings and files (missing, folders, FIFOs, garbage, paths under
a file, corrupt sidecars): whatever the combination, main() answers with a documented exit code below 70 (never
an internal error or traceback), and every failure is one error line.

main() runs in this process; the work behind a valid combination is replaced by stand-ins so each example costs
milliseconds: the exporter's tracing (options and checkpoint are still checked), parity's PyTorch reference and
backends, and the benchmarks. Real processes are covered by tests/test_cli.py."""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deploy.bench.cpu
import deploy.bench.serve
import deploy.parity
import export.exporter
from deploy.cli import EXIT_CODES, EXIT_INTERNAL_ERROR, main
from export.involution_onnx import single_node_model
from rednet.checkpoint import read_state_dict

EXAMPLES = 40
FILE_KINDS = ["new", "missing_folder", "directory", "fifo", "garbage", "empty", "under_a_file", "onnx"]
ints = st.integers(-3, 5000).map(str) | st.sampled_from(["", "abc", "1.5", "-0", "1e3", " 7 "])
models = st.sampled_from(["rednet26", "nosuch", "", "rednet26 "])
files = st.sampled_from(FILE_KINDS)


def make_file(root: Path, kind: str, name: str) -> str:
    """A path of the given kind inside ``root``."""
    path = root / name
    if kind == "missing_folder":
        return str(root / "no" / "such" / name)
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "garbage":
        path.write_bytes(b"\x08\x96\x01 not what it claims to be \xff")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "under_a_file":
        (root / f"{name}.file").write_text("x")
        return str(root / f"{name}.file" / name)
    elif kind == "onnx":
        import onnx
        onnx.save(single_node_model(dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1)), path)
    return str(path)


def flag(name: str, value) -> list[str]:
    return [] if value is None else [name, value]


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch, tmp_path):
    def to_onnx(options, progress=None, model=None):
        options.validate()
        if options.checkpoint:
            read_state_dict(options.checkpoint)
        return single_node_model(dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1))
    monkeypatch.setattr(export.exporter, "to_onnx", to_onnx)
    monkeypatch.setattr(deploy.parity, "parity_backends", lambda *a, **k: ([], {}))
    monkeypatch.setattr(deploy.parity, "TorchBackend", lambda model: lambda x: np.zeros((len(x), 1000), np.float32))
    for module in (deploy.bench.cpu, deploy.bench.serve):
        monkeypatch.setattr(module, "run", lambda out_dir, **k: out_dir.mkdir(parents=True, exist_ok=True))
    monkeypatch.chdir(tmp_path)


def check(argv: list[str], capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code in EXIT_CODES and code < EXIT_INTERNAL_ERROR, f"{argv}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{argv}:\n{err}"
    if code >= 2:
        assert sum("error:" in line for line in err.splitlines()) == 1, f"{argv}:\n{err}"


def in_scratch(test):
    """Run each example in a fresh folder (hypothesis repeats the test body; pytest's tmp_path is per test)."""
    def run(*args, **kwargs):
        with tempfile.TemporaryDirectory() as scratch:
            old = os.getcwd()
            os.chdir(scratch)
            try:
                test(Path(scratch), *args, **kwargs)
            finally:
                os.chdir(old)
    return run


fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(model=models, out=files, checkpoint=st.none() | files, opset=st.none() | ints, size=st.none() | ints,
       precision=st.sampled_from([None, "fp32", "fp16", "fp8"]), dynamic=st.sampled_from([None, "all", "hw"]))
def test_export(capsys, model, out, checkpoint, opset, size, precision, dynamic):
    @in_scratch
    def body(root):
        argv = ["export", model, "--out", make_file(root, out, "m.onnx")]
        argv += flag("--checkpoint", checkpoint and make_file(root, checkpoint, "c.pth"))
        argv += flag("--opset", opset) + flag("--input-size", size) + flag("--precision", precision)
        check(argv + flag("--dynamic", dynamic), capsys)
    body()


@fuzz
@given(model=models, onnx_file=st.none() | files, report=st.none() | files, checkpoint=st.none() | files,
       sizes=st.none() | st.lists(ints, min_size=1, max_size=3), batches=st.none() | st.lists(ints, max_size=2))
def test_parity(capsys, model, onnx_file, report, checkpoint, sizes, batches):
    @in_scratch
    def body(root):
        argv = ["parity", model] + flag("--onnx", onnx_file and make_file(root, onnx_file, "m.onnx"))
        argv += flag("--report", report and make_file(root, report, "r.json"))
        argv += flag("--checkpoint", checkpoint and make_file(root, checkpoint, "c.pth"))
        argv += (["--size", *sizes] if sizes is not None else []) + (["--batch", *batches] if batches else [])
        check(argv, capsys)
    body()


@fuzz
@given(target=st.sampled_from([None, "runtime", "serve", "gpu"]), out=st.none() | files,
       threads=st.none() | ints, repeats=st.none() | ints)
def test_bench(capsys, target, out, threads, repeats):
    @in_scratch
    def body(root):
        argv = ["bench"] + ([target] if target else []) + flag("--out", out and make_file(root, out, "results"))
        check(argv + flag("--threads", threads) + flag("--repeats", repeats), capsys)
    body()


@fuzz
@given(settings_=st.dictionaries(st.sampled_from(["PORT", "MAX_BATCH", "MAX_DELAY_MS", "TIMEOUT_MS", "THREADS",
                                                  "MAX_BODY_MB", "GRACE_S"]), ints, max_size=3),
       onnx_file=st.sampled_from(["missing_folder", "directory", "fifo"]), port=st.none() | ints)
def test_serve_settings(capsys, monkeypatch, settings_, onnx_file, port):
    """Never a valid model file: the service must not start, whatever the settings."""
    @in_scratch
    def body(root):
        with monkeypatch.context() as env:
            for name, value in settings_.items():
                env.setenv(f"REDNET_SERVE_{name}", value)
            check(["serve", "rednet26", "--onnx", make_file(root, onnx_file, "m.onnx")] + flag("--port", port), capsys)
    body()


sidecars = st.binary(max_size=40) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["onnx", "profile", "input", "min",
                                                                                  "max", "x"]), inner, max_size=4),
    max_leaves=10).map(lambda v: json.dumps(v).encode())


@fuzz
@given(sidecar=st.none() | sidecars, engine=st.sampled_from(["garbage", "missing_folder", "directory"]),
       max_batch=st.none() | ints)
def test_triton_repo_engine_files(capsys, sidecar, engine, max_batch):
    @in_scratch
    def body(root):
        plan = make_file(root, engine, "m.plan")
        if sidecar is not None and engine == "garbage":
            Path(plan + ".json").write_bytes(sidecar)
        check(["triton-repo", "rednet26", "--engine", plan, "--out", str(root / "repo")] +
              flag("--max-batch", max_batch), capsys)
    body()
