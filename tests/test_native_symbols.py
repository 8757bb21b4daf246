"""Each native library exports its entry points and nothing else: no CUDA launcher, no static CUDA runtime, no C++
standard library instantiations that could bind to another library's copy in the same process (ONNX Runtime,
TensorRT, Triton and torch all load their own). Runs wherever `make plugins` built the libraries."""
import shutil
import subprocess

import pytest

from deploy import native

EXPORTS = {
    "librednet_ort_ops.so": {"RegisterCustomOps"},
    "librednet_cuda_capi.so": {"rednet_involution_cuda", "rednet_cuda_driver_problem"},
    "librednet_trt_plugin.so": {"getCreators", "setLoggerFinder", "rednet_cuda_driver_problem"},
}


def defined_dynamic_symbols(library) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_library_exports_only_its_entry_points(name):
    library = native.BUILD_DIR / name
    if not library.is_file():
        pytest.skip(f"{name} is not built here (make plugins builds what the machine allows)")
    assert defined_dynamic_symbols(library) == EXPORTS[name]
