"""The GPU check's data and its behaviour on a machine without a GPU (the GPU run itself is `make gpu-check`)."""
import subprocess
import sys

import pytest
import torch

from deploy import gpu_check
from deploy.bench.cpu import involution_shapes


def test_benchmark_shapes_are_rednet50s():
    shapes = [(s["x"][1], s["x"][2], s["x"][3], s["kernel_size"], s["stride"], s["groups"]) for s in involution_shapes()]
    assert shapes == gpu_check.REDNET50_SHAPES


def test_unfold_formulation_matches_the_op():
    from rednet.ops import involution
    x, w = torch.randn(2, 32, 9, 11, dtype=torch.float64), torch.randn(2, 2 * 49, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(gpu_check.unfold_involution(x, w, 7, 2, 3, 1, 2), involution(x, w, 7, 2, 3, 1, 2))


def test_fails_fast_and_clearly_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real check runs through `make gpu-check`")
    run = subprocess.run([sys.executable, "-m", "deploy.gpu_check"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "no CUDA GPU" in run.stderr
