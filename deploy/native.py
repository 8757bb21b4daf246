"""Locating the native libraries built by `make plugins` (or given by environment variables)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = Path(os.environ.get("REDNET_BUILD_DIR", REPO_ROOT / "build" / "plugins"))

LIBRARIES = {
    # name: (environment override, file name, how to build it)
    "ort_ops": ("REDNET_ORT_OPS_LIB", "librednet_ort_ops.so", "make plugins"),
    "torch_ops": ("REDNET_TORCH_OPS_LIB", "librednet_torch_ops.so", "make plugins"),
    "cuda_capi": ("REDNET_CUDA_CAPI_LIB", "librednet_cuda_capi.so", "make plugins (needs nvcc)"),
    "trt_plugin": ("REDNET_TRT_PLUGIN_LIB", "librednet_trt_plugin.so", "make plugins TENSORRT_INCLUDE_DIR=..."),
}


class LibraryNotFound(FileNotFoundError):
    pass


def find_library(name: str, required: bool = True) -> Path | None:
    """Path of a native library: the environment variable if set (must exist), else the build folder."""
    env, filename, build = LIBRARIES[name]
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not path.is_file():
            raise LibraryNotFound(f"{env}={path} does not exist")
        return path
    path = BUILD_DIR / filename
    if path.is_file():
        return path
    if required:
        raise LibraryNotFound(f"{filename} not found in {BUILD_DIR} (build it with `{build}` or set {env})")
    return None
