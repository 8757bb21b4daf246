"""TensorRT: engine build (thin, on the official `tensorrt` API) and the `tensorrt` runtime backend.

Everything that is our logic — version gate, builder flags, the plugin-layer check, the optimisation profile, the
engine sidecar and its checks, timing-cache keys, plugin loading and its error paths — is in plain functions
testable without TensorRT; the calls into TensorRT are kept to `build_engine` and `TensorRTBackend`. Device memory,
streams and the GPU name come from cuda-python's runtime bindings (no torch). Without TensorRT every entry point
raises MissingBackend (exit code 3).
"""
from __future__ import annotations

import ctypes
import functools
import json
import re
import threading
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

INSTALL_HINT = ("TensorRT is not installed: `make setup GPU=1` (tensorrt >= 10.7, cuda-python, the plugin) on a "
                "machine with an NVIDIA GPU and driver, then `make engine` (README: Deploy on a GPU machine)")
# 10.0-10.6 parsers always import a node's local function when it has one, so the plugin would never run.
MIN_TENSORRT = (10, 7)
PLUGIN_CREATOR = ("Involution", "1", "")  # name, version, namespace: what the exported nodes ask the parser for
PLUGIN_OP = ("rednet", "Involution")      # domain, op_type of those nodes


def unavailable_reason() -> str | None:
    """None when the tensorrt backend can run here, else why not (parity and bench skip it with this reason)."""
    import importlib.util
    for module, package in (("tensorrt", "tensorrt"), ("cuda", "cuda-python")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    try:
        require_tensorrt()
        gpu_properties()
    except MissingBackend as e:
        return str(e)
    return None


def check_tensorrt_version(version: str) -> None:
    major_minor = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if major_minor < MIN_TENSORRT:
        raise MissingBackend(f"TensorRT {version} is too old: rednet-deploy needs TensorRT >= "
                             f"{'.'.join(map(str, MIN_TENSORRT))} (older ONNX parsers import the Involution function "
                             f"body instead of the plugin); `pip install 'tensorrt>=10.7'`")


def require_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingBackend(INSTALL_HINT) from None
    check_tensorrt_version(tensorrt.__version__)
    return tensorrt


@functools.cache
def trt_logger():
    """The process's one trt.Logger (TensorRT keeps the first logger it is given)."""
    trt = require_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


# ---- CUDA through cuda-python --------------------------------------------------------------------------------

def cudart():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise MissingBackend("cuda-python is not installed: `make setup GPU=1` or `pip install cuda-python`") \
                from None
    return runtime


def cuda_check(result, what: str):
    """cuda-python returns (error, *values): the values, or MissingBackend naming the call and the error."""
    error, *values = result
    if error != cudart().cudaError_t.cudaSuccess:
        raise MissingBackend(f"CUDA {what} failed: {getattr(error, 'name', error)}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuProperties:
    name: str
    compute_capability: str


def gpu_properties() -> GpuProperties:
    rt = cudart()
    if cuda_check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount") < 1:
        raise MissingBackend("no CUDA GPU is visible: a TensorRT engine needs one")
    props = cuda_check(rt.cudaGetDeviceProperties(cuda_check(rt.cudaGetDevice(), "cudaGetDevice")),
                       "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuProperties(name.split("\0")[0], f"{props.major}.{props.minor}")


# ---- the plugin library --------------------------------------------------------------------------------------

def library_driver_problem(library: Path) -> str:
    """"" when this machine's NVIDIA driver can run ``library`` (built with some CUDA runtime), else one line naming
    both versions and the fix, from the library itself (common/cuda_driver_check.h)."""
    try:
        check = ctypes.CDLL(str(library)).rednet_cuda_driver_problem
    except OSError as e:
        raise MissingBackend(f"cannot load {library}: {e}") from None
    except AttributeError:
        raise MissingBackend(f"{library} has no rednet_cuda_driver_problem: it is an older build; rebuild it with "
                             f"`make plugins`") from None
    check.argtypes, check.restype = [ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int
    message = ctypes.create_string_buffer(1024)
    return message.value.decode() if check(message, len(message)) else ""


_loaded_plugins: dict[str, object] = {}


def load_plugin(registry, library: Path) -> None:
    """Check the driver can run the plugin library, then register it with TensorRT (once per process)."""
    problem = library_driver_problem(library)
    if problem:
        raise MissingBackend(problem)
    register_plugin(registry, library)


def register_plugin(registry, library: Path) -> None:
    """Load ``library`` into TensorRT's plugin registry once per process and check its creator is registered.

    ``load_library`` returns None on failure and on a second load of one library, so a process loads it once.
    """
    key = str(Path(library).resolve())
    if key not in _loaded_plugins:
        handle = registry.load_library(key)
        if handle is None:
            raise MissingBackend(f"TensorRT could not load the plugin library {library} (see the TensorRT log); "
                                 f"rebuild it with `make plugins` against this TensorRT's headers")
        _loaded_plugins[key] = handle
    name, version, namespace = PLUGIN_CREATOR
    if registry.get_creator(name, version, namespace) is None:
        raise MissingBackend(f"TensorRT's plugin registry has no creator {name!r} version {version!r} namespace "
                             f"{namespace!r} after loading {library}: the rednet::Involution nodes would not run "
                             f"on the plugin; rebuild it with `make plugins`")


def onnx_involution_count(onnx_path: str | Path) -> int:
    """The rednet::Involution nodes of the main graph (each must become one plugin layer)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return sum((node.domain, node.op_type) == PLUGIN_OP for node in graph.node)


def count_plugin_layers(network, plugin_layer_type) -> int:
    """Layers of ``plugin_layer_type`` (``trt.LayerType.PLUGIN_V3``) in a parsed INetworkDefinition."""
    return sum(network.get_layer(i).type == plugin_layer_type for i in range(network.num_layers))


class PluginNotUsed(MissingBackend):
    """The parsed network does not run our plugin for every rednet::Involution node (exit code 3)."""


def check_plugin_layers(found: int, expected: int, onnx_path: Path, library: Path) -> None:
    if found != expected:
        raise PluginNotUsed(f"TensorRT made {found} plugin layers for the {expected} rednet::Involution nodes of "
                            f"{onnx_path}: the plugin from {library} did not replace every node (the parser imported "
                            f"function bodies instead), so the engine would not run our kernel; refusing to build it")


# ---- builder flags -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuilderFlags:
    """Names of ``trt.BuilderFlag`` members to set and to clear on the builder config."""
    set: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()


def builder_flags(precision: str, tf32: bool = False, weakly_typed_fp16: bool = False,
                  embed_plugin: bool = False) -> BuilderFlags:
    """fp32 engines clear TF32 (on by default, ~1e-3 relative error) unless ``tf32``; fp16 comes from an fp16 file
    (strongly typed) or, with ``weakly_typed_fp16``, from the FP16 flag; ``embed_plugin`` (for Triton) needs a
    version-compatible plan, the only kind that carries plugin libraries."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    if tf32 and precision != "fp32":
        raise ValueError("--tf32 applies to fp32 engines (an fp16 engine already computes in reduced precision)")
    if weakly_typed_fp16 and precision != "fp16":
        raise ValueError("--weakly-typed-fp16 builds an fp16 engine: use it with --precision fp16")
    set_, clear = [], []
    if precision == "fp32":
        (set_ if tf32 else clear).append("TF32")
    if weakly_typed_fp16:
        set_.append("FP16")
    if embed_plugin:
        set_.append("VERSION_COMPATIBLE")
    return BuilderFlags(tuple(set_), tuple(clear))


def apply_builder_flags(builder_flag_enum, config, flags: BuilderFlags) -> None:
    for names, apply in ((flags.set, config.set_flag), (flags.clear, config.clear_flag)):
        for name in names:
            if not hasattr(builder_flag_enum, name):
                raise ValueError(f"this TensorRT has no BuilderFlag.{name}"
                                 + (": TensorRT 11 has no weak typing; export with --precision fp16" if name == "FP16"
                                    else ""))
            apply(getattr(builder_flag_enum, name))


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
    """TensorRT version and GPU of this machine (needs tensorrt, cuda-python and a CUDA GPU)."""
    trt = require_tensorrt()
    gpu = gpu_properties()
    return {"tensorrt_version": trt.__version__, "gpu": gpu.name, "compute_capability": gpu.compute_capability}


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



# ---- timing cache --------------------------------------------------------------------------------------------

def timing_cache_path(cache_dir: str | Path, environment: dict, plugin_sha256: str) -> Path:
    """One cache per TensorRT version, GPU and plugin build: a cache is only valid for the ones that timed it."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", environment["gpu"]).strip("-")
    cc = environment["compute_capability"].replace(".", "")
    return Path(cache_dir) / f"trt{environment['tensorrt_version']}_{gpu}_sm{cc}_plugin{plugin_sha256[:12]}.cache"


def use_timing_cache(config, path: Path, progress: Callable[[str], None]) -> None:
    """Give ``config`` the cache at ``path``; one TensorRT rejects (corrupt, other version) is replaced by an empty one."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    progress(f"TensorRT rejected the timing cache {path}; timing from scratch (it will be replaced)")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeError("TensorRT rejected an empty timing cache (see the TensorRT log)")


def write_plan(out: Path, plan: bytes, sidecar: dict) -> None:
    """Plan and sidecar as one step: the old sidecar goes first, so an interruption leaves at worst a plan without a
    sidecar (refused, and rebuilt by from_onnx), never a plan next to a sidecar that describes another build."""
    sidecar_path(out).unlink(missing_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(plan))
    atomic_write(sidecar_path(out), lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2)))


def reuse_problem(engine: Path, onnx_sha256: str, settings: dict, environment: dict,
                  plugin_library: Path) -> str | None:
    """None when the plan at ``engine`` was built from this ONNX file with these settings for this TensorRT, GPU and
    plugin build; else why it must be (re)built."""
    if not engine.is_file():
        return f"{engine} does not exist"
    try:
        sidecar = load_sidecar(engine)
        if sidecar.get("onnx_sha256") != onnx_sha256:
            return f"{engine} was built from another ONNX file"
        changed = [k for k, v in settings.items() if sidecar.get(k) != v]
        if changed:
            return f"{engine} was built with other settings ({', '.join(changed)})"
        check_sidecar(sidecar, environment, plugin_library, engine)
    except EngineMismatch as e:
        return str(e)
    return None


# ---- build -----------------------------------------------------------------------------------------------------

def build_engine(onnx_path: str | Path, out: str | Path, precision: str = "fp32", min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, size: tuple[int, int, int] = (224, 224, 224),
                 weakly_typed_fp16: bool = False, tf32: bool = False, embed_plugin: bool = False,
                 plugin_override: bool = False, timing_cache_dir: str | Path | None = "artifacts/timing_cache",
                 progress: Callable[[str], None] = print) -> Path:
    """Parse the ONNX with our plugin loaded, check every rednet::Involution node became a plugin layer, build a
    serialised engine and write it with its sidecar.

    fp16 comes from the fp16 ONNX file as a strongly typed network (TensorRT 11 has no weak typing); on 10.x,
    ``weakly_typed_fp16`` instead lets the builder choose fp16 kernels for an fp32 file. ``embed_plugin`` serialises
    the plugin library into a version-compatible plan (what Triton loads; plugins/tensorrt/README.md).
    ``plugin_override`` sets the parser's ENABLE_PLUGIN_OVERRIDE, which lets any registered plugin replace a
    same-named ONNX op: our nodes do not need it (they carry plugin_namespace).
    """
    trt = require_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    flags = builder_flags(precision, tf32, weakly_typed_fp16, embed_plugin)
    plugin_library = find_library("trt_plugin")
    environment = current_environment()
    profile = make_profile(onnx_input_dims(onnx_path), min_batch, opt_batch, max_batch, size)
    expected_plugins = onnx_involution_count(onnx_path)
    load_plugin(trt.get_plugin_registry(), plugin_library)
    logger = trt_logger()
    builder = trt.Builder(logger)
    strongly_typed = not weakly_typed_fp16
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed
                                     else 0)
    parser = trt.OnnxParser(network, logger)
    if plugin_override:
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    progress(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  {errors}")
    plugin_layers = count_plugin_layers(network, trt.LayerType.PLUGIN_V3)
    check_plugin_layers(plugin_layers, expected_plugins, onnx_path, plugin_library)
    config = builder.create_builder_config()
    apply_builder_flags(trt.BuilderFlag, config, flags)
    if embed_plugin:
        config.plugins_to_serialize = [str(plugin_library.resolve())]
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    plugin_sha = sha256(plugin_library)
    cache_path = timing_cache_path(timing_cache_dir, environment, plugin_sha) if timing_cache_dir else None
    if cache_path:
        use_timing_cache(config, cache_path, progress)
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, progress)
    progress(f"building {precision}{' (TF32)' if tf32 else ''} engine, profile min {profile.min} opt {profile.opt} "
             f"max {profile.max}, {plugin_layers} plugin layers")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    sidecar = make_sidecar(environment, plugin_library, onnx_path, precision, profile, strongly_typed)
    sidecar.update(tf32=tf32, embedded_plugin=embed_plugin, plugin_layers=plugin_layers)
    write_plan(out, bytes(serialized), sidecar)
    if cache_path:
        cache = bytes(config.get_timing_cache().serialize())
        atomic_write(cache_path, lambda tmp: Path(tmp).write_bytes(cache))
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
    """An engine + our plugin on the current CUDA device, on a stream of its own: numpy batch in, numpy logits out."""

    def __init__(self, engine: str | Path):
        trt = require_tensorrt()
        self._rt = rt = cudart()
        self.engine_path = Path(engine)
        plugin_library = find_library("trt_plugin")
        self.sidecar = load_sidecar(self.engine_path)
        check_sidecar(self.sidecar, current_environment(), plugin_library, self.engine_path)
        self.profile = Profile(**{k: tuple(v) for k, v in self.sidecar["profile"]["input"].items()})
        self.name = "tensorrt-tf32" if self.sidecar.get("tf32") else "tensorrt"
        self.tolerance = "tf32" if self.sidecar.get("tf32") else self.sidecar.get("precision", "fp32")
        load_plugin(trt.get_plugin_registry(), plugin_library)
        self.runtime = trt.Runtime(trt_logger())
        # a plan carrying the plugin library is version compatible: its lean runtime is host code we built
        self.runtime.engine_host_code_allowed = bool(self.sidecar.get("embedded_plugin"))
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"TensorRT could not deserialise {self.engine_path}; rebuild it with `make engine`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.inputs[0])))
        self._output_dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.outputs}
        self.stream = cuda_check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._lock = threading.Lock()  # one execution context and one set of buffers

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, precision: str = "fp32", engine: str | Path | None = None,
                  tf32: bool = False, progress: Callable[[str], None] = print, **build_args) -> "TensorRTBackend":
        """Reuse the plan when its sidecar matches this ONNX file, settings, TensorRT, GPU and plugin; else build."""
        onnx_sha = sha256(onnx_path)
        suffix = f"{precision}{'.tf32' if tf32 else ''}"
        engine = Path(engine or Path("artifacts") / "engines" / f"{onnx_sha[:16]}.{suffix}.plan")
        settings = {"precision": precision, "tf32": tf32, "embedded_plugin": build_args.get("embed_plugin", False)}
        problem = reuse_problem(engine, onnx_sha, settings, current_environment(), find_library("trt_plugin"))
        if problem:
            progress(f"building {engine}: {problem}")
            build_engine(onnx_path, engine, precision=precision, tf32=tf32, progress=progress, **build_args)
        return cls(engine)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_check(self._rt.cudaFree(pointer), "cudaFree")
            pointer = int(cuda_check(self._rt.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        rt = self._rt
        shape = tuple(batch.shape)
        self.profile.check(shape)
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        stream = self.stream
        with self._lock:
            x_device = self._device_buffer(self.inputs[0], x.nbytes)
            cuda_check(rt.cudaMemcpyAsync(x_device, x.ctypes.data, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                          stream), "cudaMemcpyAsync")
            self.context.set_input_shape(self.inputs[0], shape)
            self.context.set_tensor_address(self.inputs[0], x_device)
            for name in self.outputs:
                out_shape = tuple(self.context.get_tensor_shape(name))
                nbytes = int(np.prod(out_shape)) * self._output_dtypes[name].itemsize
                self.context.set_tensor_address(name, self._device_buffer(name, nbytes))
            if not self.context.execute_async_v3(int(stream)):
                raise RuntimeError("TensorRT execution failed (see the log above)")
            name = self.outputs[-1]
            result = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._output_dtypes[name])
            cuda_check(rt.cudaMemcpyAsync(result.ctypes.data, self._buffers[name][0], result.nbytes,
                                          rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync")
            cuda_check(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return result

    def close(self) -> None:
        with self._lock:
            for pointer, _ in self._buffers.values():
                self._rt.cudaFree(pointer)
            self._buffers.clear()
            if self.stream is not None:
                self._rt.cudaStreamDestroy(self.stream)
                self.stream = None

    def __del__(self):
        if getattr(self, "_buffers", None) is not None and getattr(self, "stream", None) is not None:
            self.close()
