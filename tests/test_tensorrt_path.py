"""Our logic around TensorRT (version gate, builder flags, plugin-layer check, plugin registration, profile,
sidecar checks, timing-cache keys, GPU host setup, library discovery, error paths), testable without it.
The fakes stand in for TensorRT objects only, with the attributes the real Python API has (IPluginRegistry
.load_library/.get_creator, INetworkDefinition.num_layers/.get_layer(i).type, IBuilderConfig.set_flag/clear_flag/
create_timing_cache/set_timing_cache). None of this claims TensorRT works: the lines that need a real TensorRT are
listed in the issue note."""
import importlib.util
import json
import platform
import subprocess
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

import deploy.tensorrt_backend as trt_backend
from deploy import gpu_setup, native
from deploy.backends import create_backend
from deploy.cli import main as cli
from deploy.errors import MissingBackend
from deploy.tensorrt_backend import (BuilderFlags, EngineMismatch, PluginNotUsed, Profile, apply_builder_flags,
                                     builder_flags, check_plugin_layers, check_sidecar, check_tensorrt_version,
                                     count_plugin_layers, library_driver_problem, load_plugin, load_sidecar,
                                     make_profile, make_sidecar, onnx_input_dims, onnx_involution_count,
                                     register_plugin, require_tensorrt, reuse_problem, sidecar_path,
                                     timing_cache_path, use_timing_cache, write_plan)
from export import ExportOptions, export
from helpers import requires

REPO = Path(__file__).resolve().parents[1]

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def rednet26_onnx(tmp_path_factory):
    return export(ExportOptions("rednet26", input_size=64), tmp_path_factory.mktemp("onnx") / "rednet26.onnx")


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


def test_input_dims_of_exported_files(tmp_path, rednet26_onnx):
    assert onnx_input_dims(rednet26_onnx) == ["batch", 3, 64, 64]
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
    assert len(err) == 1 and "TensorRT is not installed" in err[0] and "make setup GPU=1" in err[0]
    with pytest.raises(MissingBackend, match="TensorRT is not installed"):
        create_backend("tensorrt", engine="artifacts/x.plan")
    with pytest.raises(MissingBackend):
        require_tensorrt()
    assert trt_backend.unavailable_reason() == "tensorrt is not installed"


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the missing-TensorRT path cannot be shown")
def test_make_engine_without_tensorrt_is_one_line_and_exit_3():
    result = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "engine"], capture_output=True,
                            text=True)
    lines = result.stderr.strip().splitlines()
    # GNU make itself exits 2 whenever a recipe fails; it reports the CLI's exit code 3 on its own line
    assert result.returncode == 2 and result.stdout == "" and len(lines) == 2, result.stderr
    assert lines[0].startswith("error: TensorRT is not installed") and lines[1].endswith("engine] Error 3")


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


# ---- item 1: TF32 ----------------------------------------------------------------------------------------------

class FakeBuilderFlag(Enum):
    """trt.BuilderFlag members we use (TensorRT 10.x; 11.x has no FP16)."""
    FP16 = 0
    TF32 = 6
    VERSION_COMPATIBLE = 13


class FakeConfig:
    """IBuilderConfig's flag and timing-cache methods, recording calls."""

    def __init__(self, accepts=lambda data: True):
        self.flags, self.calls, self.accepts = set(), [], accepts

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def create_timing_cache(self, data):
        self.calls.append(("create", bytes(data)))
        return ("cache", bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.calls.append(("set", cache[1], ignore_mismatch))
        return self.accepts(cache[1])


@pytest.mark.parametrize("args,expected", [
    (("fp32",), BuilderFlags(clear=("TF32",))),
    (("fp32", True), BuilderFlags(set=("TF32",))),
    (("fp16",), BuilderFlags()),
    (("fp16", False, True), BuilderFlags(set=("FP16",))),
    (("fp32", False, False, True), BuilderFlags(set=("VERSION_COMPATIBLE",), clear=("TF32",))),
])
def test_builder_flags(args, expected):
    assert builder_flags(*args) == expected


def test_fp32_engine_clears_the_default_tf32():
    config = FakeConfig()
    config.flags.add(FakeBuilderFlag.TF32)  # TensorRT's default: "enabled by default"
    apply_builder_flags(FakeBuilderFlag, config, builder_flags("fp32"))
    assert config.flags == set()
    apply_builder_flags(FakeBuilderFlag, config, builder_flags("fp32", tf32=True))
    assert config.flags == {FakeBuilderFlag.TF32}


@pytest.mark.parametrize("args,needle", [
    (("fp16", True), "--tf32 applies to fp32"), (("fp32", False, True), "use it with --precision fp16"),
    (("int8",), "precision must be fp32 or fp16, got 'int8'")])
def test_builder_flags_reject_bad_combinations(args, needle):
    with pytest.raises(ValueError, match=needle):
        builder_flags(*args)


def test_weak_typing_on_tensorrt_11_is_a_clear_error():
    no_fp16 = Enum("BuilderFlag11", {"TF32": 6, "VERSION_COMPATIBLE": 12})
    with pytest.raises(ValueError, match="no BuilderFlag.FP16: TensorRT 11 has no weak typing"):
        apply_builder_flags(no_fp16, FakeConfig(), builder_flags("fp16", weakly_typed_fp16=True))


def test_parity_holds_tf32_to_its_own_tolerance():
    from deploy.parity import TOLERANCES, Metrics
    m = Metrics(max_abs=0.01, max_rel=2e-3, cosine_min=0.9999, top1_agreement=1.0)
    assert not m.within("fp32") and m.within("tf32")
    assert TOLERANCES["tf32"]["max_rel"] > TOLERANCES["fp32"]["max_rel"]


# ---- item 2: the plugin must run --------------------------------------------------------------------------------

@pytest.mark.parametrize("version,ok", [("10.6.0.26", False), ("8.6.1", False), ("10.7.0", True),
                                        ("10.16.1.11", True), ("11.1.0", True)])
def test_version_gate(version, ok):
    if ok:
        check_tensorrt_version(version)
    else:
        with pytest.raises(MissingBackend, match=rf"TensorRT {version} is too old: .* >= 10.7"):
            check_tensorrt_version(version)


class FakeLayerType(Enum):
    CONVOLUTION = 0
    PLUGIN_V2 = 1
    PLUGIN_V3 = 2


class FakeLayer:
    def __init__(self, layer_type):
        self.type = layer_type


class FakeNetwork:
    """INetworkDefinition's num_layers and get_layer(i) (each layer has .type, an ILayer attribute)."""

    def __init__(self, types):
        self.layers = [FakeLayer(t) for t in types]

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, index):
        return self.layers[index]


def test_plugin_layers_are_counted_against_the_onnx_nodes(rednet26_onnx, tmp_path):
    import rednet
    from rednet.models.layers import Involution
    involutions = sum(isinstance(m, Involution) for m in rednet.create_model("rednet26").modules())
    assert involutions > 0 and onnx_involution_count(rednet26_onnx) == involutions
    L = FakeLayerType
    parsed = FakeNetwork([L.CONVOLUTION, L.PLUGIN_V3] * involutions + [L.PLUGIN_V2])
    assert count_plugin_layers(parsed, L.PLUGIN_V3) == involutions
    check_plugin_layers(count_plugin_layers(parsed, L.PLUGIN_V3), involutions, rednet26_onnx, tmp_path / "lib.so")
    # the parser fell back to the function bodies: no plugin layer at all, or some nodes only
    for layers in ([L.CONVOLUTION] * 40, [L.PLUGIN_V3] * (involutions - 1)):
        with pytest.raises(PluginNotUsed) as info:
            check_plugin_layers(count_plugin_layers(FakeNetwork(layers), L.PLUGIN_V3), involutions, rednet26_onnx,
                                tmp_path / "lib.so")
        assert isinstance(info.value, MissingBackend)  # exit code 3
        assert f"for the {involutions} rednet::Involution nodes" in str(info.value) and "\n" not in str(info.value)


class FakeRegistry:
    """IPluginRegistry.load_library (None on failure and on a second load) and get_creator(name, version, ns)."""

    def __init__(self, loads=True, registers=True):
        self.loads, self.registers, self.loaded = loads, registers, []

    def load_library(self, path):
        if not self.loads or path in self.loaded:
            return None
        self.loaded.append(path)
        return object()

    def get_creator(self, name, version, plugin_namespace=""):
        ours = self.registers and self.loaded and (name, version, plugin_namespace) == ("Involution", "1", "")
        return object() if ours else None


def test_plugin_library_is_registered_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "_loaded_plugins", {})
    library = tmp_path / "librednet_trt_plugin.so"
    registry = FakeRegistry()
    register_plugin(registry, library)
    register_plugin(registry, library)  # a second load_library would return None: not called again
    assert registry.loaded == [str(library.resolve())]


@pytest.mark.parametrize("registry,needle", [
    (FakeRegistry(loads=False), "TensorRT could not load the plugin library"),
    (FakeRegistry(registers=False), "no creator 'Involution' version '1' namespace ''")])
def test_plugin_that_does_not_register_is_loud(registry, needle, tmp_path, monkeypatch):
    monkeypatch.setattr(trt_backend, "_loaded_plugins", {})
    with pytest.raises(MissingBackend, match=needle):
        register_plugin(registry, tmp_path / "librednet_trt_plugin.so")


# ---- item 4: driver vs the runtime the library was built with --------------------------------------------------

CUDA_CAPI = native.BUILD_DIR / "librednet_cuda_capi.so"


@requires("cuda_capi")
def test_driver_check_of_a_built_library():
    """The check the plugin and this library share (common/cuda_driver_check.h), through the ctypes entry point."""
    problem = library_driver_problem(CUDA_CAPI)
    if Path("/proc/driver/nvidia/version").exists():
        assert problem == "" or problem.startswith(f"{CUDA_CAPI.resolve()} was built with the CUDA "), problem
    else:
        assert problem.startswith(f"{CUDA_CAPI.resolve()}: no NVIDIA driver found") and "needs a driver" in problem
    if problem:
        with pytest.raises(MissingBackend, match="NVIDIA driver"):
            load_plugin(FakeRegistry(), CUDA_CAPI)  # refused before TensorRT sees it


def test_driver_check_of_a_foreign_library(tmp_path):
    with pytest.raises(MissingBackend, match="cannot load"):
        library_driver_problem(tmp_path / "missing.so")


# ---- item 8: timing cache, plan + sidecar, reuse ---------------------------------------------------------------

ENV = {"tensorrt_version": "10.16.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_timing_cache_is_keyed_by_tensorrt_gpu_and_plugin(tmp_path):
    base = timing_cache_path(tmp_path, ENV, "ab" * 32)
    assert base == timing_cache_path(tmp_path, dict(ENV), "ab" * 32)
    assert base.parent == tmp_path and base.name == "trt10.16.0_NVIDIA-H100-80GB-HBM3_sm90_pluginabababababab.cache"
    others = {timing_cache_path(tmp_path, {**ENV, "tensorrt_version": "11.1.0"}, "ab" * 32),
              timing_cache_path(tmp_path, {**ENV, "gpu": "NVIDIA H200"}, "ab" * 32),
              timing_cache_path(tmp_path, {**ENV, "compute_capability": "8.0"}, "ab" * 32),
              timing_cache_path(tmp_path, ENV, "cd" * 32)}
    assert len(others) == 4 and base not in others


def test_rejected_timing_cache_is_replaced_not_ignored(tmp_path):
    path = tmp_path / "t.cache"
    path.write_bytes(b"stale")
    accepted = FakeConfig()
    use_timing_cache(accepted, path, progress=lambda m: None)
    assert accepted.calls == [("create", b"stale"), ("set", b"stale", False)]
    messages = []
    rejecting = FakeConfig(accepts=lambda data: data == b"")
    use_timing_cache(rejecting, path, progress=messages.append)
    assert rejecting.calls[-1] == ("set", b"", False) and "rejected the timing cache" in messages[0]
    with pytest.raises(RuntimeError, match="rejected an empty timing cache"):
        use_timing_cache(FakeConfig(accepts=lambda data: False), path, progress=lambda m: None)


def test_plan_and_sidecar_are_written_together(tmp_path):
    plan = tmp_path / "m.plan"
    profile = {"input": {"min": [1, 3, 64, 64], "max": [8, 3, 64, 64]}}  # what load_sidecar requires
    v1, v2 = ({"onnx": "m.onnx", "precision": p, "profile": profile} for p in ("fp32", "fp16"))
    write_plan(plan, b"plan v1", v1)
    assert plan.read_bytes() == b"plan v1" and load_sidecar(plan) == v1
    write_plan(plan, b"plan v2", v2)
    assert plan.read_bytes() == b"plan v2" and load_sidecar(plan) == v2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json"]  # no temporary files left


def test_plan_write_failure_leaves_no_stale_sidecar(tmp_path):
    plan = tmp_path / "m.plan"
    write_plan(plan, b"plan v1", {"precision": "fp32"})
    plan.unlink()
    plan.mkdir()  # replacing a folder fails after the old sidecar was removed
    with pytest.raises(OSError):
        write_plan(plan, b"plan v2", {"precision": "fp16"})
    assert not sidecar_path(plan).exists()


def test_cached_plan_is_reused_only_when_everything_matches(built):
    env, plugin, engine, sidecar = built
    engine.write_bytes(b"plan")
    onnx_sha = sidecar["onnx_sha256"]
    settings = {"precision": "fp16"}
    assert reuse_problem(engine, onnx_sha, settings, env, plugin) is None
    assert "another ONNX file" in reuse_problem(engine, "0" * 64, settings, env, plugin)
    assert "other settings (precision)" in reuse_problem(engine, onnx_sha, {"precision": "fp32"}, env, plugin)
    assert "TensorRT: engine built with '10.16.0'" in reuse_problem(engine, onnx_sha, settings,
                                                                   {**env, "tensorrt_version": "10.17.0"}, plugin)
    plugin.write_bytes(b"plugin v2")
    assert "plugin library" in reuse_problem(engine, onnx_sha, settings, env, plugin)
    assert "does not exist" in reuse_problem(engine.with_suffix(".other"), onnx_sha, settings, env, plugin)


# ---- items 3 and 6: header discovery and the GPU host setup ----------------------------------------------------

def _make(*args, **variables) -> str:
    command = ["make", "-s", "--no-print-directory", "-C", str(REPO), *args,
               *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def test_makefile_finds_packaged_headers_folder(tmp_path):
    """Debian/Ubuntu libnvinfer-dev and NGC containers put NvInfer.h in /usr/include/<arch>-linux-gnu."""
    packaged = tmp_path / "usr" / "include" / f"{platform.machine()}-linux-gnu"
    packaged.mkdir(parents=True)
    (packaged / "NvInfer.h").write_text("// stand-in\n")
    dirs = f"{tmp_path}/third_party/tensorrt/include {packaged} {tmp_path}/usr/include"
    assert _make("tensorrt-include", TENSORRT_HEADER_DIRS=dirs) == str(packaged)  # the folder, not the header
    assert _make("tensorrt-include", TENSORRT_HEADER_DIRS=f"{tmp_path}/nothing") == ""
    assert _make("tensorrt-include", TENSORRT_INCLUDE_DIR="/given") == "/given"


@pytest.mark.parametrize("defines,version", [
    ("#define NV_TENSORRT_MAJOR 10 //!< major\n#define NV_TENSORRT_MINOR 8\n#define NV_TENSORRT_PATCH 0\n", (10, 8, 0)),
    ("#define TRT_MAJOR_ENTERPRISE 11\n#define TRT_MINOR_ENTERPRISE 1\n#define TRT_PATCH_ENTERPRISE 0\n", (11, 1, 0))])
def test_header_version(tmp_path, defines, version):
    (tmp_path / "NvInferVersion.h").write_text(defines)
    assert gpu_setup.header_version(tmp_path) == version
    assert gpu_setup.header_version(tmp_path / "none") is None


def test_gpu_host_checks_name_what_is_missing():
    assert gpu_setup.parse_driver_cuda("| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4  |") \
        == (12, 4)
    assert gpu_setup.parse_nvcc("Cuda compilation tools, release 13.0, V13.0.88") == (13, 0)
    assert gpu_setup.host_problems((13, 0), (13, 0), "/usr/include/x86_64-linux-gnu", (10, 16, 0)) == []
    problems = gpu_setup.host_problems(None, None, "", None)
    assert len(problems) == 3 and "no NVIDIA driver" in problems[0] and "no CUDA compiler" in problems[1]
    assert "no TensorRT headers found" in problems[2] and "libnvinfer-dev" in problems[2]
    [mismatch] = gpu_setup.host_problems((12, 4), (13, 0), "/inc", (10, 16, 0))
    assert "nvcc is CUDA 13.0 but the driver supports CUDA 12.4" in mismatch and "CUDA 12.x toolkit" in mismatch
    [old] = gpu_setup.host_problems((12, 4), (12, 4), "/inc", (10, 6, 0))
    assert "are 10.6.0" in old and ">= 10.7" in old


def test_gpu_requirements_swap_onnxruntime_and_add_tensorrt():
    base = "# pins\ntorch==2.13.0\nonnxruntime==1.32.0\nonnxscript==0.7.2\n"
    lines = gpu_setup.gpu_requirements(base, 12, (10, 16, 0)).splitlines()
    assert "onnxruntime==1.32.0" not in lines and gpu_setup.ONNXRUNTIME_GPU in lines
    assert "onnxscript==0.7.2" in lines and "torch==2.13.0" in lines
    assert "tensorrt-cu12==10.16.*" in lines and "cuda-python==12.*" in lines


def test_gpu_setup_without_a_gpu_says_so(tmp_path):
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    assert gpu_setup.main(["check", "--headers", "", "--requirements", str(tmp_path / "r.txt")]) == 3
    assert not (tmp_path / "r.txt").exists()
