"""The CUDA involution kernels keep their accumulators in registers: no stack frame, no spills, on every
architecture the build targets (ptxas's resource report; the GPU itself is not needed)."""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy.native import BUILD_DIR, REPO_ROOT
from helpers import requires

KERNEL_DIR = REPO_ROOT / "plugins" / "common"
# every CUDA source of the involution (today involution_cuda.cu: the per-pixel and the tiled kernels)
KERNEL_SOURCES = sorted(KERNEL_DIR.glob("involution_cuda*.cu"))
# ptxas -v: "Function properties for <mangled name>" then "N bytes stack frame, S bytes spill stores, L bytes spill loads"
PROPERTIES = re.compile(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                        r"(\d+) bytes spill loads")


def built_architectures() -> list[str]:
    """The SASS architectures of the CUDA build (its CMake cache), else the CMakeLists default."""
    pattern = re.compile(r'CMAKE_CUDA_ARCHITECTURES(?::STRING=| "?)([0-9;]+)')
    for source in (BUILD_DIR / "CMakeCache.txt", REPO_ROOT / "plugins" / "CMakeLists.txt"):
        if source.is_file():
            match = pattern.search(source.read_text())
            if match:
                return match.group(1).split(";")
    raise AssertionError("no CUDA architecture list in the build cache or plugins/CMakeLists.txt")


def resource_usage(compiler: str, arch: str, source: Path, out_dir: Path) -> dict[str, tuple[int, int, int]]:
    result = subprocess.run(
        [compiler, "-cubin", f"-arch=sm_{arch}", "-O3", "-std=c++17", "-Xptxas", "-v", f"-I{KERNEL_DIR}", str(source),
         "-o", str(out_dir / f"{source.stem}_sm{arch}.cubin")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {name: tuple(map(int, usage)) for name, *usage in PROPERTIES.findall(result.stderr)}


@requires("nvcc")
def test_involution_kernels_use_no_local_memory_on_any_architecture(tmp_path):
    compiler, archs = shutil.which("nvcc"), built_architectures()
    jobs = [(arch, source) for arch in archs for source in KERNEL_SOURCES]
    with ThreadPoolExecutor(2) as pool:
        usages = pool.map(lambda job: resource_usage(compiler, job[0], job[1], tmp_path), jobs)
        reports = {arch: {} for arch in archs}
        for (arch, _), usage in zip(jobs, usages):
            reports[arch].update(usage)
    for arch, kernels in reports.items():
        involution = {name: usage for name, usage in kernels.items() if "Involution" in name}
        per_pixel = [name for name in involution if "InvolutionKernel" in name]
        # 6 tile shapes × fp32/fp16 × NCHW/channel-last (involution_cuda_tiled.h's table)
        tiled = [name for name in involution if "InvolutionTiledKernel" in name]
        assert len(per_pixel) >= 2, f"sm_{arch}: expected the fp32 and fp16 per-pixel kernels, got {kernels}"
        assert len(tiled) >= 24, f"sm_{arch}: expected 24 tiled kernels, got {len(tiled)}: {tiled}"
        offenders = {name: usage for name, usage in involution.items() if any(usage)}
        assert not offenders, f"sm_{arch}: (stack frame, spill stores, spill loads) bytes not zero: {offenders}"
