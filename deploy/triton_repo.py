"""`make triton-repo`: a Triton Inference Server model repository for scale-out on an existing engine.

Writes <out>/models/<model>/ (config.pbtxt with platform tensorrt_plan, max_batch_size within the engine's
profile, dynamic batching; 1/model.plan), optionally <out>/models/<model>_onnx/ (platform onnxruntime_onnx with
our op library, copied to <out>/plugins/, as a model operation), and <out>/launch.sh that starts tritonserver.

Triton's TensorRT backend only dlopens the libraries of `--backend-config=tensorrt,plugins=...` and never asks
them for their creators, so our plugin reaches Triton inside the plan: the engine must be built with
`--embed-plugin` (a version-compatible plan carrying the plugin library) and launch.sh turns on the backend's
`version-compatible=true`, which lets TensorRT run the plan's host code (plugins/tensorrt/README.md).
Every config is parsed back into Triton's own ModelConfig protobuf (shipped in tritonclient) and checked against
the engine's profile. The repository is written to a temporary folder beside <out> and moved into place, so a
failure leaves no partial repository and an existing one untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import onnx

from .native import find_library
from .tensorrt_backend import load_sidecar

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}


def _signature(onnx_path: Path) -> tuple[dict, dict]:
    model = onnx.load(str(onnx_path), load_external_data=False)

    def spec(value):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "data_type": ONNX_TO_TRITON[value.type.tensor_type.elem_type], "dims": dims[1:]}
    return spec(model.graph.input[0]), spec(model.graph.output[-1])


def _tensor(block: str, t: dict) -> str:
    return f'{block} [\n  {{\n    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n    dims: {t["dims"]}\n  }}\n]\n'


def config_pbtxt(name: str, platform: str, max_batch: int, inputs: dict, output: dict, delay_us: int,
                 extra: str = "") -> str:
    preferred = sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch} | {max_batch})
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            + _tensor("input", inputs) + _tensor("output", output)
            + f"dynamic_batching {{\n  preferred_batch_size: {preferred}\n  max_queue_delay_microseconds: {delay_us}\n}}\n"
            + 'instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]\n' + extra)


def validate_config(text: str, max_batch_limit: int | None = None):
    """Parse into Triton's ModelConfig (unknown fields or bad values raise) and check the batch bound."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    if max_batch_limit is not None and not 1 <= config.max_batch_size <= max_batch_limit:
        raise ValueError(f"max_batch_size {config.max_batch_size} is outside the engine profile (1..{max_batch_limit})")
    if not config.input or not config.output:
        raise ValueError("config has no input or output")
    return config


LAUNCH_SCRIPT = """#!/usr/bin/env bash
# Start Triton on this repository. The plan carries the rednet TensorRT plugin; version-compatible=true lets
# TensorRT load it (trust this plan as you trust the code that built it). It runs from the repository root:
# the ONNX Runtime config names plugins/librednet_ort_ops.so relative to it.
cd "$(dirname "$0")" || exit 1
exec tritonserver --model-repository="$PWD/models" --backend-config=tensorrt,version-compatible=true "$@"
"""


def write_repository(model: str, engine: str | Path, out: str | Path, onnx_path: str | Path | None = None,
                     max_batch: int | None = None, delay_us: int = 2000) -> Path:
    engine, out = Path(engine), Path(out)
    if not engine.is_file():
        raise FileNotFoundError(f"engine {engine} does not exist: build it with `make engine MODEL={model} TRITON=1`")
    sidecar = load_sidecar(engine)
    if not sidecar.get("embedded_plugin"):
        raise ValueError(f"{engine} does not carry the plugin library, and Triton's TensorRT backend cannot register "
                         f"it from outside: rebuild it with `make engine MODEL={model} TRITON=1` (--embed-plugin)")
    min_shape, max_shape = sidecar["profile"]["input"]["min"], sidecar["profile"]["input"]["max"]
    if min_shape[0] != 1:
        raise ValueError(f"Triton batches from 1, but the engine's profile starts at batch {min_shape[0]}: "
                         f"rebuild with MIN_BATCH=1")
    max_batch = max_batch or max_shape[0]
    if not 1 <= max_batch <= max_shape[0]:
        raise ValueError(f"max_batch {max_batch} is outside the engine profile (1..{max_shape[0]})")
    ort_lib = find_library("ort_ops", required=False) if onnx_path is not None else None
    if onnx_path is not None and ort_lib is None:
        raise FileNotFoundError("the onnxruntime_onnx variant needs librednet_ort_ops.so: build it with `make plugins`")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would keep a Triton container's user out
        _write(staging, model, engine, sidecar, max_batch, max_shape, onnx_path, ort_lib, delay_us)
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write(root: Path, model: str, engine: Path, sidecar: dict, max_batch: int, max_shape: list[int],
           onnx_path: str | Path | None, ort_lib: Path | None, delay_us: int) -> None:
    inputs, output = _signature(Path(onnx_path or sidecar["onnx"]))
    inputs["dims"] = [d if d > 0 else s for d, s in zip(inputs["dims"], max_shape[1:])]  # static dims of the plan
    text = config_pbtxt(model, "tensorrt_plan", max_batch, inputs, output, delay_us)
    validate_config(text, max_shape[0])
    (root / "models" / model / "1").mkdir(parents=True)
    shutil.copyfile(engine, root / "models" / model / "1" / "model.plan")
    (root / "models" / model / "config.pbtxt").write_text(text)

    if onnx_path is not None:
        name = f"{model}_onnx"
        # Triton dlopens this path as given, so it is relative to the repository root, where launch.sh starts Triton
        extra = 'model_operations {\n  op_library_filename: "plugins/librednet_ort_ops.so"\n}\n'
        text = config_pbtxt(name, "onnxruntime_onnx", max_batch, *_signature(Path(onnx_path)), delay_us, extra)
        text = text.replace("kind: KIND_GPU", "kind: KIND_CPU")
        validate_config(text)
        (root / "models" / name / "1").mkdir(parents=True)
        (root / "plugins").mkdir()
        shutil.copyfile(onnx_path, root / "models" / name / "1" / "model.onnx")
        shutil.copyfile(ort_lib, root / "plugins" / "librednet_ort_ops.so")
        (root / "models" / name / "config.pbtxt").write_text(text)

    launch = root / "launch.sh"
    launch.write_text(LAUNCH_SCRIPT)
    launch.chmod(launch.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (root / "repository.json").write_text(json.dumps({"model": model, "engine_sidecar": sidecar,
                                                      "max_batch_size": max_batch}, indent=2))


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` is set aside first and removed only once ``new`` is in place."""
    if not out.exists():
        new.rename(out)
        return
    old = new.with_name(new.name + ".old")
    out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)
