"""`make gpu-check`: the CUDA kernel and the TensorRT plugin on a real GPU, in one run, one JSON report.

(a) kernel vs PyTorch on the GPU over the attribute sweep (fp32: max rel <= 1e-5; fp16: max abs <= 1e-2),
    driving the exact launcher the plugin uses (librednet_cuda_capi.so) on torch's current stream;
(b) the plugin through its real interfaces (involution_plugin_gpu_check: dlopen, getCreators, createPlugin from
    fields, configure, enqueue on device buffers) against the contract's reference;
(c) RedNet-50's involution shapes: our kernel (fp32, fp16) vs the PyTorch op and its unfold formulation, with
    achieved GB/s next to a device-to-device copy of the same bytes. Targets: >= 3x the unfold path, >= 70 % of copy.

Needs only torch (CUDA build) and numpy on the GPU machine; the rest comes from the build folder.
Exit codes: 0 all checks pass, 1 a check failed, 3 no GPU / missing build outputs.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# RedNet-50 at 224×224, batch 1: (C, H, W, kernel_size, stride, groups); tests/test_gpu_check.py holds this to the model.
REDNET50_SHAPES = [(32, 112, 112, 3, 1, 2), (64, 56, 56, 7, 1, 4), (128, 56, 56, 7, 2, 8), (128, 28, 28, 7, 1, 8),
                   (256, 28, 28, 7, 2, 16), (256, 14, 14, 7, 1, 16), (512, 14, 14, 7, 2, 32), (512, 7, 7, 7, 1, 32)]
SWEEP = [(k, s, d, g, n, c, h, w)
         for k, s, d, g, n, c, h, w in [(3, 1, 1, 2, 2, 32, 17, 17), (3, 2, 1, 1, 1, 16, 9, 12), (5, 1, 2, 4, 3, 64, 15, 8),
                                        (5, 2, 1, 2, 2, 32, 8, 13), (7, 1, 1, 4, 2, 64, 56, 56), (7, 2, 1, 8, 1, 128, 57, 55),
                                        (7, 1, 2, 2, 1, 40, 23, 19), (7, 2, 2, 1, 2, 20, 31, 30), (7, 1, 1, 32, 3, 512, 7, 7),
                                        (9, 3, 1, 1, 1, 16, 40, 41)]]
TARGET_SPEEDUP_OVER_UNFOLD = 3.0
TARGET_FRACTION_OF_COPY = 0.70


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class Kernel:
    """ctypes view of rednet_involution_cuda (plugins/common/involution_capi.cpp)."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.fn = self.lib.rednet_involution_cuda
        self.fn.restype = ctypes.c_int

    def __call__(self, x, weight, y, attrs, stream):
        import torch
        I64x5, I64x4 = ctypes.c_int64 * 5, ctypes.c_int64 * 4
        err = ctypes.create_string_buffer(512)
        rc = self.fn(ctypes.c_int(x.dtype == torch.float16), ctypes.c_void_p(x.data_ptr()),
                     ctypes.c_void_p(weight.data_ptr()), ctypes.c_void_p(y.data_ptr()), I64x5(*attrs),
                     I64x4(*x.shape), I64x4(*weight.shape), ctypes.c_void_p(stream), err, 512)
        if rc:
            raise RuntimeError(err.value.decode())


def unfold_involution(x, weight, k, s, p, d, g):
    """The official formulation: unfold, multiply by the kernel, sum over taps."""
    import torch.nn.functional as F
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    cols = F.unfold(x, k, d, p, s).view(n, g, c // g, k * k, ho, wo)
    return (cols * weight.view(n, g, 1, k * k, ho, wo)).sum(dim=3).view(n, c, ho, wo)


def cuda_time_ms(fn, repeats=50, warmup=5) -> float:
    import torch
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def check_kernel(kernel: Kernel) -> list[dict]:
    import torch
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    stream = torch.cuda.current_stream().cuda_stream
    for k, s, d, g, n, c, h, w in SWEEP:
        p = (k - 1) // 2 * d
        ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
        x = torch.randn(n, c, h, w, device="cuda", generator=gen)
        weight = torch.randn(n, g * k * k, ho, wo, device="cuda", generator=gen) * 0.3
        for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
            xi, wi = x.to(dtype), weight.to(dtype)
            ref = unfold_involution(xi.double(), wi.double(), k, s, p, d, g)
            y = torch.empty(n, c, ho, wo, device="cuda", dtype=dtype)
            kernel(xi, wi, y, (k, s, p, d, g), stream)
            torch.cuda.synchronize()
            max_abs = (y.double() - ref).abs().max().item()
            max_rel = max_abs / ref.abs().max().item()
            passed = max_rel <= 1e-5 if name == "fp32" else max_abs <= 1e-2
            rows.append({"x": [n, c, h, w], "kernel_size": k, "stride": s, "dilation": d, "groups": g,
                         "precision": name, "max_abs": max_abs, "max_rel": max_rel, "passed": passed})
    return rows


def check_plugin(binary: Path, plugin: Path) -> dict:
    if not binary.is_file() or not plugin.is_file():
        return {"passed": False, "error": f"{binary} or {plugin} not built (TensorRT headers missing?)"}
    run = subprocess.run([str(binary), str(plugin)], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        return {"passed": False, "error": f"exit {run.returncode}: {run.stderr.strip()[-2000:]}"}
    report["passed"] = run.returncode == 0
    return report


def bench(kernel: Kernel, batch: int, repeats: int) -> list[dict]:
    import torch
    try:
        from rednet.ops import involution as torch_op
    except Exception as e:  # the GPU machine may lack the project's Python dependencies
        torch_op, why = None, f"{type(e).__name__}: {e}"
    rows = []
    stream = torch.cuda.current_stream().cuda_stream
    for c, h, w, k, s, g in REDNET50_SHAPES:
        p, d = (k - 1) // 2, 1
        ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
        row = {"x": [batch, c, h, w], "kernel_size": k, "stride": s, "groups": g}
        for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
            x = torch.randn(batch, c, h, w, device="cuda", dtype=dtype)
            weight = torch.randn(batch, g * k * k, ho, wo, device="cuda", dtype=dtype)
            y = torch.empty(batch, c, ho, wo, device="cuda", dtype=dtype)
            moved = x.nbytes + weight.nbytes + y.nbytes
            src = torch.empty((x.nbytes + weight.nbytes) // 2, device="cuda", dtype=torch.float16)
            dst = torch.empty_like(src)
            ms = {
                "ours": cuda_time_ms(lambda: kernel(x, weight, y, (k, s, p, d, g), stream), repeats),
                "unfold": cuda_time_ms(lambda: unfold_involution(x, weight, k, s, p, d, g), repeats),
                "copy": cuda_time_ms(lambda: dst.copy_(src), repeats),
            }
            if torch_op is not None:
                ms["torch_op"] = cuda_time_ms(lambda: torch_op(x, weight, k, s, p, d, g), repeats)
            gbs = {key: (2 * src.nbytes if key == "copy" else moved) / v / 1e6 for key, v in ms.items()}
            row[name] = {"ms": ms, "gb_per_s": gbs, "speedup_over_unfold": ms["unfold"] / ms["ours"],
                         "fraction_of_copy": gbs["ours"] / gbs["copy"]}
            if torch_op is None:
                row[name]["torch_op"] = f"not measured: {why}"
        rows.append(row)
        f32 = row["fp32"]
        print(f"  x{tuple(row['x'])} K{k} s{s}: fp32 {f32['ms']['ours']:.3f} ms {f32['gb_per_s']['ours']:.0f} GB/s "
              f"({f32['fraction_of_copy']:.0%} of copy, {f32['speedup_over_unfold']:.1f}x unfold); fp16 "
              f"{row['fp16']['gb_per_s']['ours']:.0f} GB/s ({row['fp16']['fraction_of_copy']:.0%} of copy)", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build/gpu", help="build folder of `make gpu-check`")
    parser.add_argument("--out", default="bench/results/gpu_check.json")
    parser.add_argument("--batch", type=int, default=32, help="batch of the benchmark shapes (default 32)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch on this machine; run it on a GPU machine", file=sys.stderr)
        return 3
    build = Path(args.build)
    capi = build / "librednet_cuda_capi.so"
    if not capi.is_file():
        print(f"gpu-check: {capi} missing; build with CUDA first (make gpu-check does)", file=sys.stderr)
        return 3
    kernel = Kernel(capi)
    t0 = time.time()
    report = {"gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "targets": {"speedup_over_unfold": TARGET_SPEEDUP_OVER_UNFOLD, "fraction_of_copy": TARGET_FRACTION_OF_COPY}}
    print(f"gpu-check on {report['gpu']} (sm_{report['capability']})", flush=True)
    print("(a) kernel vs PyTorch over the sweep", flush=True)
    report["kernel_parity"] = check_kernel(kernel)
    print(f"    {sum(r['passed'] for r in report['kernel_parity'])}/{len(report['kernel_parity'])} within tolerance", flush=True)
    print("(b) plugin through its interfaces", flush=True)
    report["plugin"] = check_plugin(build / "involution_plugin_gpu_check", build / "librednet_trt_plugin.so")
    print(f"    {'pass' if report['plugin']['passed'] else 'FAIL'}", flush=True)
    print(f"(c) RedNet-50 involution shapes, batch {args.batch}", flush=True)
    report["bench"] = bench(kernel, args.batch, args.repeats)
    report["targets_met"] = {
        "speedup_over_unfold": all(r[p]["speedup_over_unfold"] >= TARGET_SPEEDUP_OVER_UNFOLD
                                   for r in report["bench"] for p in ("fp32", "fp16")),
        "fraction_of_copy": all(r[p]["fraction_of_copy"] >= TARGET_FRACTION_OF_COPY
                                for r in report["bench"] for p in ("fp32", "fp16")),
    }
    report["seconds"] = time.time() - t0
    passed = all(r["passed"] for r in report["kernel_parity"]) and report["plugin"]["passed"]
    report["passed"] = passed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out}; checks {'PASS' if passed else 'FAIL'}; targets {report['targets_met']}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
