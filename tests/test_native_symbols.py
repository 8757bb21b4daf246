"""Each native library exports its entry points and nothing else: no CUDA launcher, no static CUDA runtime, no C++
standard library instantiations that could bind to another library's copy in the same process (ONNX Runtime,
TensorRT, Triton and torch all load their own). Runs wherever `make plugins` built the libraries."""
import subprocess

import pytest

from deploy import native
from helpers import requires

EXPORTS = {
    "librednet_ort_ops.so": {"RegisterCustomOps"},
    "librednet_cuda_capi.so": {"rednet_involution_cuda", "rednet_involution_cuda_kernels", "rednet_cuda_driver_problem"},
    "librednet_trt_plugin.so": {"getCreators", "setLoggerFinder", "rednet_cuda_driver_problem"},
}
BUILT_WITH = {"librednet_ort_ops.so": "ort_ops", "librednet_cuda_capi.so": "cuda_capi",
              "librednet_trt_plugin.so": "tensorrt_headers"}


def defined_dynamic_symbols(library) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@requires("nm")
@pytest.mark.parametrize("name", [pytest.param(name, marks=requires(BUILT_WITH[name])) for name in sorted(EXPORTS)])
def test_library_exports_only_its_entry_points(name):
    assert defined_dynamic_symbols(native.BUILD_DIR / name) == EXPORTS[name]
