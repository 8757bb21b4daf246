"""The CLI as a real process: each kind of user error is one line naming the bad value with its documented exit
code (never a traceback), outputs are never written onto non-regular files, an interrupted export leaves nothing
beside OUT, and `parity` tests the file `make export` wrote with the sizes that file accepts."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import onnx
import pytest
import torch

import rednet

from deploy.cli import EXIT_CODES, main
from export import ExportOptions, export
from helpers import randomise, requires
from rednet.fileio import OutputPathError, atomic_write, check_output_path

needs_lib = requires("ort_ops")


def run_cli(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "deploy.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_in_process(*args, capsys):
    """main() in this process: the subprocess tests cover the process itself, this covers more cases cheaply."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_user_error(proc, code, *needles):
    """Exit ``code``, no traceback, and exactly one error line naming every needle."""
    assert proc.returncode == code, f"exit {proc.returncode}, stderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_documents_every_exit_code(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for code, meaning in EXIT_CODES.items():
        assert f"{code:3d}  {meaning}" in proc.stdout
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in readme


def test_export_onto_a_fifo_is_exit_2_before_exporting(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    proc = run_cli("export", "rednet26", "--out", tmp_path / "pipe", cwd=tmp_path)
    assert_user_error(proc, 2, f"cannot write {tmp_path / 'pipe'}: it is not a regular file")
    assert "tracing" not in proc.stderr  # refused before the export, not after minutes of it
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)  # not replaced by a regular file


@pytest.mark.parametrize("kind,needle", [("directory", "it is a directory"), ("under_a_file", "is not a directory")])
def test_export_out_that_cannot_be_a_file_is_exit_2(tmp_path, capsys, kind, needle):
    (tmp_path / "plain").write_text("x")
    target = tmp_path if kind == "directory" else tmp_path / "plain" / "m.onnx"
    proc = run_in_process("export", "rednet26", "--out", target, capsys=capsys)
    assert_user_error(proc, 2, f"cannot write {target}", needle)


def test_atomic_write_never_replaces_a_device(tmp_path):
    """/dev/null is a character device: refused (as root the rename would have replaced it), and left as it was."""
    with pytest.raises(OutputPathError, match="/dev/null: it is not a regular file"):
        atomic_write("/dev/null", lambda tmp: open(tmp, "w").write("x"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    link = tmp_path / "link.onnx"
    link.symlink_to("/dev/null")
    with pytest.raises(OutputPathError, match="not a regular file"):
        check_output_path(link)


def test_read_only_file_system_is_exit_2_naming_out(tmp_path):
    """The file-system flag is simulated (mounting needs privileges CI lacks); the CLI runs for real."""
    script = textwrap.dedent(f"""\
        import os, sys
        real = os.statvfs
        class ReadOnly:
            def __init__(self, path): self._s = real(path)
            def __getattr__(self, name): return getattr(self._s, name)
            f_flag = os.ST_RDONLY
        os.statvfs = ReadOnly
        from deploy.cli import main
        sys.exit(main(["export", "rednet26", "--out", {str(tmp_path / 'm.onnx')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_user_error(proc, 2, f"cannot write {tmp_path / 'm.onnx'}", "read-only file system")


INTERRUPT = textwrap.dedent("""\
    import os, signal, sys, time
    import export.exporter as exporter
    from export.involution_onnx import single_node_model
    exporter.to_onnx = lambda options, progress=None, model=None: single_node_model(
        dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1))
    def save_then_get_signalled(proto, path, *args, **kwargs):
        open(path, "wb").write(b"half of a model")
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        time.sleep(30)
    exporter.onnx.save = save_then_get_signalled
    from deploy.cli import main
    sys.exit(main(["export", "rednet26", "--out", sys.argv[1]]))
""")


def test_export_terminated_while_writing_leaves_no_temporary_files(tmp_path):
    """SIGTERM lands in the middle of writing (the exporter is replaced by a one-node model to get there fast);
    Ctrl-C takes the same path (KeyboardInterrupt instead of the handler's exception)."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, str(out), "SIGTERM"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1] == "terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and out.read_bytes() == b"previous"


def test_non_integer_serve_port_in_the_environment_is_exit_2(tmp_path):
    proc = run_cli("serve", "rednet26", cwd=tmp_path, env={"REDNET_SERVE_PORT": "abc"})
    assert_user_error(proc, 2, "REDNET_SERVE_PORT='abc' is not a valid int")


@pytest.mark.parametrize("variable,value,kind", [("PORT", "80.5", "int"), ("PORT", "", "int"),
                                                  ("MAX_DELAY_MS", "soon", "float")])
def test_bad_serve_settings_in_the_environment_are_exit_2_for_serve_only(capsys, monkeypatch, variable, value, kind):
    monkeypatch.setenv(f"REDNET_SERVE_{variable}", value)
    proc = run_in_process("serve", "rednet26", capsys=capsys)
    assert_user_error(proc, 2, f"REDNET_SERVE_{variable}={value!r} is not a valid {kind}")
    assert run_in_process("models", capsys=capsys).returncode == 0


def test_port_in_use_is_exit_4_not_backend_missing(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"checked after the address")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "rednet26", "--onnx", tmp_path / "m.onnx", "--port", port, cwd=tmp_path)
    assert_user_error(proc, 4, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_port_out_of_range_is_exit_2(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"checked after the address")
    assert_user_error(run_in_process("serve", "rednet26", "--onnx", tmp_path / "m.onnx", "--port", 70000,
                                     capsys=capsys), 2, "port 70000 is outside 0..65535")


def test_corrupt_engine_sidecar_is_exit_2_naming_it(tmp_path):
    (tmp_path / "m.plan").write_bytes(b"plan")
    (tmp_path / "m.plan.json").write_bytes(b"\xff\xfe not json")
    proc = run_cli("triton-repo", "rednet26", "--engine", "m.plan", "--out", "repo", cwd=tmp_path)
    assert_user_error(proc, 2, "engine sidecar m.plan.json is corrupt")


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"onnx": "m.onnx", "profile": {}}', b"null"])
def test_well_formed_json_that_is_no_sidecar_is_exit_2(tmp_path, capsys, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.plan").write_bytes(b"plan")
    (tmp_path / "m.plan.json").write_bytes(content)
    proc = run_in_process("triton-repo", "rednet26", "--engine", "m.plan", "--out", "repo", capsys=capsys)
    assert_user_error(proc, 2, "engine sidecar m.plan.json is corrupt")


@pytest.mark.parametrize("args,needles", [
    (["parity", "rednet26", "--onnx", "notes.txt"], ["notes.txt is not an ONNX model"]),
    (["parity", "rednet26", "--onnx", "."], [". does not exist or is not a file"]),
    (["parity", "rednet26", "--size", "0"], ["--size: 0 is not a positive integer"]),
    (["export", "rednet26", "--opset", "99"], ["opset 99 is outside 18..23"]),
    (["export", "rednet26", "--input-size", "7"], ["input size 7 is outside 32..4096"]),
    (["export", "rednet26", "--checkpoint", "missing.pth"], ["checkpoint 'missing.pth' does not exist"]),
    (["bench", "--out", "notes.txt"], ["--out notes.txt is not a directory"]),
    (["bench", "--threads", "zero"], ["--threads: 'zero' is not an integer"]),
], ids=["onnx_not_a_model", "onnx_directory", "size_0", "opset_99", "input_size_7", "missing_checkpoint",
        "bench_out_is_a_file", "threads_not_an_int"])
def test_bad_arguments_and_files_are_exit_2(tmp_path, capsys, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    assert_user_error(run_in_process(*args, capsys=capsys), 2, *needles)


def test_bad_arguments_in_a_real_process(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    assert_user_error(run_cli("parity", "rednet26", "--onnx", "notes.txt", cwd=tmp_path), 2,
                      "notes.txt is not an ONNX model")


@pytest.fixture(scope="module")
def fixed_64_export(tmp_path_factory):
    """What `make export MODEL=rednet26 CHECKPOINT=r26.pth` writes, traced at 64 pixels (a fixed H=W input)."""
    root = tmp_path_factory.mktemp("project")
    torch.save(randomise(rednet.create_model("rednet26")).state_dict(), root / "r26.pth")
    export(ExportOptions("rednet26", checkpoint=str(root / "r26.pth"), input_size=64),
           root / "artifacts" / "rednet26.onnx")
    return root


@needs_lib
def test_parity_tests_the_default_export_at_the_sizes_it_accepts(fixed_64_export):
    proc = run_cli("parity", "rednet26", "--checkpoint", "r26.pth", "--batch", "2", cwd=fixed_64_export)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "testing artifacts/rednet26.onnx" in proc.stderr and "exporting" not in proc.stderr
    report = json.loads((fixed_64_export / "artifacts/parity/rednet26.fp32.json").read_text())
    assert report["onnx"] == "artifacts/rednet26.onnx"
    assert {(r["batch"], r["size"]) for r in report["results"]} == {(2, 64)}


@needs_lib
def test_parity_refuses_sizes_a_fixed_file_cannot_take(fixed_64_export, capsys, monkeypatch):
    monkeypatch.chdir(fixed_64_export)
    assert_user_error(run_in_process("parity", "rednet26", "--checkpoint", "r26.pth", "--size", "64", "161",
                                     capsys=capsys), 2, "fixed size of 64: size 161 cannot be tested")


@needs_lib
def test_parity_of_a_fresh_export_records_no_deleted_path(fixed_64_export, monkeypatch):
    """The export step hands over the fixture's file (same checkpoint) instead of tracing the model again."""
    import export as export_package
    from deploy.parity import run_parity
    monkeypatch.setattr(export_package, "to_onnx",
                        lambda *a, **k: onnx.load(fixed_64_export / "artifacts" / "rednet26.onnx"))
    report = run_parity("rednet26", checkpoint=str(fixed_64_export / "r26.pth"), batches=(1,), sizes=(64,))
    assert report.passed and report.onnx is None and report.to_json()["onnx"] is None
    assert "made for this run (not kept)" in report.table()


def test_parity_chooses_the_sizes_a_file_accepts(tmp_path):
    from deploy.parity import accepted_inputs
    for name, dims, expected in [("fixed", [None, 3, 224, 224], ((1, 3), (224,))),
                                 ("dynamic", [None, 3, None, None], ((1, 3), (224, 161))),
                                 ("fixed_batch", [4, 3, None, None], ((4,), (224, 161)))]:
        shape = ["N" if d is None and i == 0 else ("H" if d is None else d) for i, d in enumerate(dims)]
        graph = onnx.helper.make_graph([], "g", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                                     shape)], [])
        onnx.save(onnx.helper.make_model(graph), tmp_path / f"{name}.onnx")
        assert accepted_inputs(tmp_path / f"{name}.onnx") == expected, name
    with pytest.raises(ValueError, match="size 16 is below 32"):
        accepted_inputs(tmp_path / "dynamic.onnx", sizes=(16,))


def test_ctrl_c_is_exit_130_with_one_line(tmp_path, capsys, monkeypatch):
    import export.exporter

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(export.exporter, "to_onnx", interrupted)
    proc = run_in_process("export", "rednet26", "--out", tmp_path / "m.onnx", capsys=capsys)
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted" and not any(tmp_path.iterdir())
