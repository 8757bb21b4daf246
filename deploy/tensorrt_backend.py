"""TensorRT: engine build (thin, on the official `tensorrt` API) and the `tensorrt` runtime backend.

Everything that is our logic — the optimisation profile, the engine sidecar and its checks, plugin-library
discovery, error paths — is in plain functions testable without TensorRT; the calls into TensorRT are kept to
`build_engine` and `TensorRTBackend`. Without TensorRT every entry point raises MissingBackend (exit code 3).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from rednet.checkpoint import file_sha256 as sha256
from rednet.fileio import atomic_write

from .errors import MissingBackend
from .native import find_library

INSTALL_HINT = ("TensorRT is not installed: `pip install tensorrt` (10.x or 11.x) on a machine with an NVIDIA GPU "
                "and driver, then `make plugins engine` (README: Deploy on a GPU machine)")


def unavailable_reason() -> str | None:
    """None when the tensorrt backend can run here, else why not (parity and bench skip it with this reason)."""
    import importlib.util
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingBackend(INSTALL_HINT) from None
    return tensorrt


# ---- optimisation profile --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes of the input `input` (N, 3, H, W)."""
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def check(self, shape: tuple[int, ...]) -> None:
        if not self.contains(shape):
            raise ValueError(f"input shape {shape} is outside the engine's profile min {self.min} .. max {self.max}; "
                             f"rebuild the engine with other MIN_BATCH/MAX_BATCH (or sizes)")


def onnx_input_dims(onnx_path: str | Path) -> list[int | str]:
    """The dims of the model's first input: ints where static, names where dynamic."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def make_profile(input_dims: list[int | str], min_batch: int, opt_batch: int, max_batch: int,
                 size: tuple[int, int, int] = (224, 224, 224)) -> Profile:
    """Batch bounds from the arguments; H/W from the model where static, else min/opt/max ``size``."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"batch bounds must satisfy 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch})")
    if len(input_dims) != 4:
        raise ValueError(f"expected an (N, 3, H, W) input, the model's input has dims {input_dims}")
    if not 1 <= size[0] <= size[1] <= size[2]:
        raise ValueError(f"size bounds must satisfy 1 <= min <= opt <= max, got {size}")
    channels = input_dims[1] if isinstance(input_dims[1], int) else 3
    spatial = [(d, d, d) if isinstance(d, int) else size for d in input_dims[2:]]
    return Profile(min=(min_batch, channels, spatial[0][0], spatial[1][0]),
                   opt=(opt_batch, channels, spatial[0][1], spatial[1][1]),
                   max=(max_batch, channels, spatial[0][2], spatial[1][2]))


# ---- sidecar ---------------------------------------------------------------------------------------------------

def sidecar_path(engine: str | Path) -> Path:
    return Path(str(engine) + ".json")


def current_environment() -> dict:
    """TensorRT version and GPU of this machine (needs tensorrt and a CUDA GPU)."""
    trt = require_tensorrt()
    import torch
    if not torch.cuda.is_available():
        raise MissingBackend("no CUDA GPU is visible: a TensorRT engine needs one")
    return {"tensorrt_version": trt.__version__, "gpu": torch.cuda.get_device_name(),
            "compute_capability": ".".join(map(str, torch.cuda.get_device_capability()))}


def make_sidecar(environment: dict, plugin_library: Path, onnx_path: Path, precision: str, profile: Profile,
                 strongly_typed: bool) -> dict:
    return {**environment, "plugin_library": str(plugin_library), "plugin_sha256": sha256(plugin_library),
            "onnx": str(onnx_path), "onnx_sha256": sha256(onnx_path), "precision": precision,
            "strongly_typed": strongly_typed, "profile": {"input": asdict(profile)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class EngineMismatch(RuntimeError):
    """The engine was built for another TensorRT, GPU or plugin library."""


def check_sidecar(sidecar: dict, environment: dict, plugin_library: Path, engine: Path) -> None:
    """Refuse an engine built elsewhere, saying what differs and how to rebuild."""
    problems = []
    for key, what in (("tensorrt_version", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability")):
        if sidecar.get(key) != environment.get(key):
            problems.append(f"{what}: engine built with {sidecar.get(key)!r}, this machine has {environment.get(key)!r}")
    plugin_sha = sha256(plugin_library)
    if sidecar.get("plugin_sha256") != plugin_sha:
        problems.append(f"plugin library: engine built with sha256 {str(sidecar.get('plugin_sha256'))[:12]}…, "
                        f"{plugin_library} has {plugin_sha[:12]}…")
    if problems:
        rebuild = (f"make engine ONNX={sidecar.get('onnx', '<model.onnx>')} PRECISION={sidecar.get('precision', 'fp32')} "
                   f"OUT={engine}")
        raise EngineMismatch(f"{engine} cannot run here:\n  " + "\n  ".join(problems) + f"\nrebuild it: {rebuild}")


def load_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise EngineMismatch(f"{engine} has no sidecar {path}: it was not built by `make engine`, so nothing says "
                             f"which TensorRT, GPU and plugin it needs; rebuild it with `make engine`")
    try:
        sidecar = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"engine sidecar {path} is corrupt ({e}): rebuild the engine with `make engine`") from None
    if not _well_formed(sidecar):
        raise ValueError(f"engine sidecar {path} is corrupt (not a JSON object with 'onnx' and the input profile's "
                         f"min/max shapes): rebuild the engine with `make engine`")
    return sidecar


def _well_formed(sidecar) -> bool:
    """The fields readers index without checking: onnx and profile.input.min/max (4 ints each)."""
    try:
        shapes = [sidecar["profile"]["input"][bound] for bound in ("min", "max")]
    except (KeyError, TypeError):
        return False
    return isinstance(sidecar.get("onnx"), str) and all(
        isinstance(shape, list) and len(shape) == 4 and all(type(v) is int for v in shape) for shape in shapes)


# ---- build -----------------------------------------------------------------------------------------------------

def build_engine(onnx_path: str | Path, out: str | Path, precision: str = "fp32", min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, size: tuple[int, int, int] = (224, 224, 224),
                 weakly_typed_fp16: bool = False, timing_cache: str | Path | None = "artifacts/timing.cache",
                 progress: Callable[[str], None] = print) -> Path:
    """Parse the ONNX with our plugin library loaded and build a serialised engine + sidecar.

    fp16 comes from the fp16 ONNX file as a strongly typed network (TensorRT 11 has no weak typing); on 10.x,
    ``weakly_typed_fp16`` instead lets the builder choose fp16 kernels for an fp32 file.
    """
    trt = require_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    plugin_library = find_library("trt_plugin")
    environment = current_environment()
    profile = make_profile(onnx_input_dims(onnx_path), min_batch, opt_batch, max_batch, size)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(str(plugin_library))
    builder = trt.Builder(logger)
    strongly_typed = not weakly_typed_fp16
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE"):
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)  # our plugin wins over the local function
    progress(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  {errors}")
    config = builder.create_builder_config()
    if weakly_typed_fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ValueError("this TensorRT has no weak typing: export with --precision fp16 and build strongly typed")
        config.set_flag(trt.BuilderFlag.FP16)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, progress)
    progress(f"building {precision} engine, profile min {profile.min} opt {profile.opt} max {profile.max}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(bytes(serialized)))
    if cache_path:
        cache = bytes(config.get_timing_cache().serialize())
        atomic_write(cache_path, lambda tmp: Path(tmp).write_bytes(cache))
    sidecar = make_sidecar(environment, plugin_library, onnx_path, precision, profile, strongly_typed)
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2))
    progress(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {sidecar_path(out)}")
    return out


def _progress_monitor(trt, progress: Callable[[str], None]):
    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                progress(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # keep building

        def phase_finish(self, phase_name):
            pass
    return Monitor()


# ---- runtime ---------------------------------------------------------------------------------------------------

class TensorRTBackend:
    """An engine + our plugin on the current CUDA device: numpy batch in, numpy logits out."""

    name = "tensorrt"

    def __init__(self, engine: str | Path):
        trt = require_tensorrt()
        import torch
        self.engine_path = Path(engine)
        plugin_library = find_library("trt_plugin")
        self.sidecar = load_sidecar(self.engine_path)
        check_sidecar(self.sidecar, current_environment(), plugin_library, self.engine_path)
        self.profile = Profile(**{k: tuple(v) for k, v in self.sidecar["profile"]["input"].items()})
        trt.get_plugin_registry().load_library(str(plugin_library))
        self._torch, self._trt = torch, trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"TensorRT could not deserialise {self.engine_path}; rebuild it with `make engine`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.inputs[0])))

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, precision: str = "fp32", engine: str | Path | None = None,
                  **build_args) -> "TensorRTBackend":
        """Build (or reuse, when its sidecar matches this ONNX file) an engine for ``onnx_path``."""
        onnx_sha = sha256(onnx_path)
        engine = Path(engine or Path("artifacts") / "engines" / f"{onnx_sha[:16]}.{precision}.plan")
        if not (engine.is_file() and sidecar_path(engine).is_file()
                and json.loads(sidecar_path(engine).read_text()).get("onnx_sha256") == onnx_sha):
            build_engine(onnx_path, engine, precision=precision, **build_args)
        return cls(engine)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        shape = tuple(batch.shape)
        self.profile.check(shape)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=self.input_dtype)).cuda()
        self.context.set_input_shape(self.inputs[0], shape)
        self.context.set_tensor_address(self.inputs[0], x.data_ptr())
        results = {}
        for name in self.outputs:
            out_shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            results[name] = torch.empty(out_shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the log above)")
        stream.synchronize()
        return results[self.outputs[-1]].cpu().numpy()
