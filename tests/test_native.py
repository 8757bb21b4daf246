"""The C++ test binaries built by `make plugins`, run as part of the suite (they exit non-zero on any failure)."""
import subprocess

import pytest

from deploy.native import BUILD_DIR

BINARIES = {
    "involution_cpu_sweep": "CPU kernel vs the contract's reference over the sweep, and the contract's rejections",
    "involution_trt_plugin_test": "TensorRT plugin logic through its interfaces (needs TensorRT headers at build time)",
}


@pytest.mark.parametrize("name", BINARIES)
def test_cpp_binary(name):
    binary = BUILD_DIR / name
    if not binary.is_file():
        pytest.skip(f"{binary} not built: {BINARIES[name]}")
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failures" in run.stdout
