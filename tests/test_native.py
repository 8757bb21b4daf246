"""The C++ test binaries built by `make plugins`, run as part of the suite (they exit non-zero on any failure)."""
import subprocess

import pytest

from deploy.native import BUILD_DIR
from helpers import requires

BINARIES = [
    # CPU kernel and CUDA kernel body vs the contract's reference over the sweep, and the contract's rejections
    pytest.param("involution_cpu_sweep", marks=requires("cpu_sweep")),
    # the CUDA launcher's kernel choice and tiled kernels, every thread's phases run on the host, vs the reference
    pytest.param("involution_cuda_tiled_host_test", marks=requires("cuda_tiled_host_test")),
    # TensorRT plugin logic through its interfaces (needs TensorRT headers at build time)
    pytest.param("involution_trt_plugin_test", marks=requires("tensorrt_headers")),
]


@pytest.mark.parametrize("name", BINARIES)
def test_cpp_binary(name):
    run = subprocess.run([str(BUILD_DIR / name)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failures" in run.stdout
