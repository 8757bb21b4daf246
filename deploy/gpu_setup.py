"""`make setup GPU=1`: what a GPU host needs beyond `make setup`, and what it lacks.

    python -m deploy.gpu_setup check --headers DIR --requirements build/requirements-gpu.txt

checks the NVIDIA driver (nvidia-smi), the CUDA compiler (nvcc) and the TensorRT headers the Makefile found, says
everything that is missing in one go (exit 3), else writes the GPU requirements: requirements.txt with
onnxruntime-gpu instead of onnxruntime, plus the TensorRT wheel of the headers' version and cuda-python, both for
the driver's CUDA major version. The plugin is then built by `make plugins` against those headers with that nvcc.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .native import REPO_ROOT
from .tensorrt_backend import MIN_TENSORRT

ONNXRUNTIME_GPU = "onnxruntime-gpu==1.31.1"
HEADERS_HINT = ("install the headers of your TensorRT (Debian/Ubuntu: libnvinfer-dev; NGC TensorRT containers have "
                "them) or put the include/ folder of github.com/NVIDIA/TensorRT (the release branch of your version) "
                "under third_party/tensorrt/, or pass TENSORRT_INCLUDE_DIR=")


def parse_driver_cuda(nvidia_smi_output: str) -> tuple[int, int] | None:
    """The newest CUDA version the driver supports, from nvidia-smi's header ("CUDA Version: 12.4")."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi_output)
    return (int(m[1]), int(m[2])) if m else None


def parse_nvcc(nvcc_output: str) -> tuple[int, int] | None:
    """The toolkit version from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.48")."""
    m = re.search(r"release (\d+)\.(\d+)", nvcc_output)
    return (int(m[1]), int(m[2])) if m else None


def header_version(include_dir: str | Path) -> tuple[int, int, int] | None:
    """TensorRT version of a header folder (NvInferVersion.h: NV_TENSORRT_* before 10.10, TRT_*_ENTERPRISE after)."""
    path = Path(include_dir) / "NvInferVersion.h"
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    parts = [re.search(rf"#define\s+(?:NV_TENSORRT|TRT)_{part}(?:_ENTERPRISE)?\s+(\d+)", text)
             for part in ("MAJOR", "MINOR", "PATCH")]
    return tuple(int(m[1]) for m in parts) if all(parts) else None


def host_problems(driver: tuple[int, int] | None, nvcc: tuple[int, int] | None, headers: str,
                  headers_version: tuple[int, int, int] | None) -> list[str]:
    """Everything that keeps this host from running the TensorRT path, one line each (empty: ready)."""
    problems = []
    if driver is None:
        problems.append("no NVIDIA driver: nvidia-smi is missing or failed (install the NVIDIA driver; a container "
                        "needs --gpus all)")
    if nvcc is None:
        problems.append("no CUDA compiler: nvcc is not on PATH (install a CUDA toolkit the driver supports)")
    elif driver is not None and nvcc[0] > driver[0]:
        problems.append(f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but the driver supports CUDA {driver[0]}.{driver[1]} at "
                        f"most: a plugin built with it cannot run here; put a CUDA {driver[0]}.x toolkit first on "
                        f"PATH, or update the driver")
    if not headers:
        problems.append(f"no TensorRT headers found: {HEADERS_HINT}")
    elif headers_version is None:
        problems.append(f"{headers} has no readable NvInferVersion.h: is it a TensorRT include folder?")
    elif headers_version[:2] < MIN_TENSORRT:
        problems.append(f"the TensorRT headers in {headers} are {'.'.join(map(str, headers_version))}; rednet-deploy "
                        f"needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))}: {HEADERS_HINT}")
    return problems


def gpu_requirements(requirements: str, cuda_major: int, tensorrt_version: tuple[int, int, int]) -> str:
    """requirements.txt for a GPU host: onnxruntime-gpu for onnxruntime, and the TensorRT wheel of the plugin's
    headers (same major.minor) and cuda-python for the driver's CUDA major version."""
    lines = [ONNXRUNTIME_GPU if re.match(r"onnxruntime\s*(==|>=|$)", line) else line
             for line in requirements.splitlines()]
    major, minor = tensorrt_version[:2]
    lines += ["# GPU host (make setup GPU=1)", f"tensorrt-cu{cuda_major}=={major}.{minor}.*",
              f"cuda-python=={cuda_major}.*"]
    return "\n".join(lines) + "\n"


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    result = subprocess.run(command, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.gpu_setup")
    parser.add_argument("action", choices=["check"])
    parser.add_argument("--headers", default="", help="TensorRT include folder the Makefile found ('' for none)")
    parser.add_argument("--requirements", required=True, help="where to write the GPU requirements")
    args = parser.parse_args(argv)
    driver = parse_driver_cuda(_run(["nvidia-smi"]) or "")
    nvcc = parse_nvcc(_run(["nvcc", "--version"]) or "")
    version = header_version(args.headers) if args.headers else None
    problems = host_problems(driver, nvcc, args.headers, version)
    if problems:
        print("make setup GPU=1 cannot set up this host:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 3
    out = Path(args.requirements)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(gpu_requirements((REPO_ROOT / "requirements.txt").read_text(), driver[0], version))
    print(f"GPU host: driver CUDA {driver[0]}.{driver[1]}, nvcc {nvcc[0]}.{nvcc[1]}, TensorRT headers "
          f"{'.'.join(map(str, version))} in {args.headers}; requirements: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
