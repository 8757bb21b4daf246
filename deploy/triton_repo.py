"""`make triton-repo`: a Triton Inference Server model repository for scale-out on an existing engine.

Writes <out>/models/<model>/ (config.pbtxt with platform tensorrt_plan, max_batch_size within the engine's
profile, dynamic batching; 1/model.plan), <out>/plugins/ (our TensorRT plugin and ONNX Runtime op library),
optionally <out>/models/<model>_onnx/ (platform onnxruntime_onnx with our op library as a model operation), and
<out>/launch.sh that starts tritonserver with the plugin loaded. Every config is parsed back into Triton's own
ModelConfig protobuf (shipped in tritonclient) and checked against the engine's profile.
"""
from __future__ import annotations

import json
import shutil
import stat
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


def write_repository(model: str, engine: str | Path, out: str | Path, onnx_path: str | Path | None = None,
                     max_batch: int | None = None, delay_us: int = 2000) -> Path:
    engine, out = Path(engine), Path(out)
    if not engine.is_file():
        raise FileNotFoundError(f"engine {engine} does not exist: build it with `make engine MODEL={model}`")
    sidecar = load_sidecar(engine)
    min_shape, max_shape = sidecar["profile"]["input"]["min"], sidecar["profile"]["input"]["max"]
    if min_shape[0] != 1:
        raise ValueError(f"Triton batches from 1, but the engine's profile starts at batch {min_shape[0]}: "
                         f"rebuild with MIN_BATCH=1")
    max_batch = max_batch or max_shape[0]
    if not 1 <= max_batch <= max_shape[0]:
        raise ValueError(f"max_batch {max_batch} is outside the engine profile (1..{max_shape[0]})")
    source_onnx = Path(onnx_path or sidecar["onnx"])
    inputs, output = _signature(source_onnx)
    inputs["dims"] = [d if d > 0 else s for d, s in zip(inputs["dims"], max_shape[1:])]  # static dims of the plan

    models, plugins = out / "models", out / "plugins"
    (models / model / "1").mkdir(parents=True, exist_ok=True)
    plugins.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(engine, models / model / "1" / "model.plan")
    trt_plugin = plugins / "librednet_trt_plugin.so"
    shutil.copyfile(find_library("trt_plugin"), trt_plugin)
    text = config_pbtxt(model, "tensorrt_plan", max_batch, inputs, output, delay_us)
    validate_config(text, max_shape[0])
    (models / model / "config.pbtxt").write_text(text)

    ort_lib = find_library("ort_ops", required=False)
    if onnx_path is not None and ort_lib is not None:
        name = f"{model}_onnx"
        (models / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path, models / name / "1" / "model.onnx")
        shutil.copyfile(ort_lib, plugins / "librednet_ort_ops.so")
        # Triton dlopens this path as given, so it is relative to the repository root, where launch.sh starts Triton
        extra = 'model_operations {\n  op_library_filename: "plugins/librednet_ort_ops.so"\n}\n'
        text = config_pbtxt(name, "onnxruntime_onnx", max_batch, *_signature(Path(onnx_path)), delay_us, extra)
        text = text.replace("kind: KIND_GPU", "kind: KIND_CPU")
        validate_config(text)
        (models / name / "config.pbtxt").write_text(text)

    launch = out / "launch.sh"
    launch.write_text(
        "#!/usr/bin/env bash\n# Start Triton on this repository with the rednet TensorRT plugin loaded. It runs from the\n"
        "# repository root: the configs name the libraries under plugins/ relative to it.\n"
        'cd "$(dirname "$0")" || exit 1\n'
        'exec tritonserver --model-repository="$PWD/models" '
        '--backend-config=tensorrt,plugins="$PWD/plugins/librednet_trt_plugin.so" "$@"\n')
    launch.chmod(launch.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (out / "repository.json").write_text(json.dumps({"model": model, "engine_sidecar": sidecar,
                                                     "max_batch_size": max_batch}, indent=2))
    return out
