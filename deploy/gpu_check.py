"""`make gpu-check`: the CUDA kernels, the TensorRT plugin and RedNet-50 in PyTorch on a real GPU, in one run.

(a) parity: the launcher's choice and every kernel of its table by name (where it fits the case) in each layout
    (NCHW, channel-last) on the attribute sweep, fp32 and fp16, with and without the fused epilogue, against the
    PyTorch op's formulation in fp64 (fp32: max rel <= 1e-5; fp16: max abs <= 1e-2 on O(1) data); and the torch op
    itself on CUDA tensors (its forward runs our kernel: the profiler names it; its gradients match the CPU's);
(b) the plugin through its real interfaces (involution_plugin_gpu_check: dlopen, getCreators, createPlugin,
    configure, every format it offers, enqueue on device buffers) against the contract's reference;
(c) per RedNet-50 involution shape at batch 8 and 32, fp16 and fp32: µs and effective GB/s (x + weight read,
    y written) of the launcher's choice (NCHW and channel-last), of the per-pixel kernel ("today's kernel"), of a
    device-to-device copy moving the same bytes and of the unfold formulation, each timed as a CUDA graph of
    back-to-back launches (no Python in the timed region);
(d) end to end in PyTorch (eager, channels_last, fp16, cuDNN convolutions with benchmark mode): RedNet-50 with our
    op and its BatchNorm+ReLU fused into the op (rednet.fuse_involution_epilogues) vs ResNet-50, latency at batch
    1/8/32 and their ratio.

Writes bench/results/gpu_check_<gpu>.json and .png. TARGETS are stated in the report (targets_met), never
enforced: the exit code says whether every parity check passed (0), one failed (1), or the machine cannot run the
check (3: no GPU, missing build outputs).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

# RedNet-50 at 224×224: (C, H, W, kernel_size, stride, groups); tests/test_gpu_check.py holds this to the model.
REDNET50_SHAPES = [(32, 112, 112, 3, 1, 2), (64, 56, 56, 7, 1, 4), (128, 56, 56, 7, 2, 8), (128, 28, 28, 7, 1, 8),
                   (256, 28, 28, 7, 2, 16), (256, 14, 14, 7, 1, 16), (512, 14, 14, 7, 2, 32), (512, 7, 7, 7, 1, 32)]
# (kernel_size, stride, dilation, groups, N, C, H, W): tile edges, odd sizes, dilation, stride 2, 5/10/16/40 channels
# per group, RedNet's shapes and small maps (every row of the launcher's table); padding is (K-1)/2 * dilation.
SWEEP = [(3, 1, 1, 2, 2, 32, 17, 17), (3, 2, 1, 1, 1, 16, 9, 12), (5, 1, 2, 4, 3, 64, 15, 8),
         (5, 2, 1, 2, 2, 32, 8, 13), (7, 1, 1, 4, 2, 64, 56, 56), (7, 2, 1, 8, 1, 128, 57, 55),
         (7, 1, 2, 2, 1, 40, 23, 19), (7, 2, 2, 1, 2, 20, 31, 30), (7, 1, 1, 32, 3, 512, 7, 7),
         (7, 2, 1, 16, 2, 256, 14, 14), (9, 3, 1, 1, 1, 16, 40, 41)]
BENCH_BATCHES = (8, 32)
MODEL_BATCHES = (1, 8, 32)
PRECISIONS = ("fp32", "fp16")
LAYOUTS = ("nchw", "channels_last")
PER_PIXEL = "PerPixel"  # "today's kernel", the baseline (the library's kernel_names() holds every name)
LARGE_LAYER_SIZES = (56, 28)  # the "large layers": x of 56×56 or 28×28
TARGETS = {
    "large_layers_fp16_bs32_fraction_of_copy": {
        "min": 0.70, "what": "launcher's choice (NCHW), x 56×56 and 28×28, fp16, batch 32: its GB/s over the "
                            "device copy's GB/s for the same bytes"},
    "speedup_over_per_pixel": {
        "min": 4.0, "what": "every shape, batch and precision: per-pixel kernel µs over the launcher's choice µs (NCHW)"},
    "rednet50_over_resnet50_fp16_bs32": {
        "max": 1.0, "what": "PyTorch eager, channels_last fp16, batch 32: RedNet-50 (our op, fused epilogues) latency "
                            "over ResNet-50's"},
}
OUR_KERNELS = "Involution"  # in every name of our __global__ functions (not in cuDNN's "convolution")
TOLERANCE = {"fp32": ("max_rel", 1e-5), "fp16": ("max_abs", 1e-2)}


def out_size(size, k, s, p, d):
    from rednet.ops.spec import output_size  # imported late: the module itself loads without torch
    return output_size(size, k, s, p, d)


def gpu_slug(name: str) -> str:
    """A file-name form of the GPU's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must be comma-separated integers, got '{text}'") from None
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"batches must be >= 1, got '{text}'")
    return batches


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build/gpu", help="build folder of `make gpu-check`")
    parser.add_argument("--out-dir", default="bench/results", help="where gpu_check_<gpu>.json/.png go")
    parser.add_argument("--batches", type=parse_batches, default=BENCH_BATCHES, help="kernel benchmark batches")
    parser.add_argument("--model-batches", type=parse_batches, default=MODEL_BATCHES, help="end-to-end batches")
    parser.add_argument("--repeats", type=int, default=20, help="launches per timed CUDA graph (default 20)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def unfold_involution(x, weight, k, s, p, d, g):
    """The official formulation: unfold, multiply by the kernel, sum over taps."""
    import torch.nn.functional as F
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    cols = F.unfold(x, k, d, p, s).view(n, g, c // g, k * k, ho, wo)
    return (cols * weight.view(n, g, 1, k * k, ho, wo)).sum(dim=3).view(n, c, ho, wo)


# ---- timing ----------------------------------------------------------------------------------------------------

def time_us(fn, repeats: int, replays: int = 5) -> tuple[float, str]:
    """Median µs per call of ``fn``: ``repeats`` calls captured as one CUDA graph and replayed, so launch overhead
    (Python, ctypes) stays out; where capture fails, the calls run eagerly between two events. Returns (µs, how)."""
    import torch
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                fn()
        run, how = graph.replay, "cuda graph"
    except Exception:  # noqa: BLE001 - any capture failure falls back to eager timing, and the report says so
        torch.cuda.synchronize()

        def run():
            for _ in range(repeats):
                fn()
        how = "eager"
    times = []
    for _ in range(replays):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / repeats)
    return statistics.median(times), how


def cuda_launches(fn) -> list[str]:
    """The name of every CUDA kernel ``fn`` launches, in order (the profiler's): they show the launcher's choice."""
    import torch
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def cuda_kernels_of(fn) -> list[str]:
    return sorted(set(cuda_launches(fn)))


# ---- (a) parity ------------------------------------------------------------------------------------------------

def _inputs(n, c, h, w, k, s, p, d, g, dtype, gen, epilogue: bool):
    import torch
    ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    x = torch.randn(n, c, h, w, device="cuda", generator=gen).to(dtype)
    weight = (torch.randn(n, g * k * k, ho, wo, device="cuda", generator=gen) * 0.3).to(dtype)
    scale = (1 + 0.3 * torch.randn(c, device="cuda", generator=gen)).to(dtype) if epilogue else None
    shift = (0.5 * torch.randn(c, device="cuda", generator=gen)).to(dtype) if epilogue else None
    return x, weight, scale, shift


def run_kernel(kernel, x, weight, scale, shift, attrs, layout: str, name: str | None):
    """y of our kernel (NCHW values) for x, weight in ``layout``; scale/shift None mean ones/zeros."""
    import torch
    n, c = x.shape[:2]
    k, s, p, d = attrs[:4]
    shape = (n, c, out_size(x.shape[2], k, s, p, d), out_size(x.shape[3], k, s, p, d))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    scale = torch.ones(c, dtype=x.dtype, device=x.device) if scale is None else scale
    shift = torch.zeros(c, dtype=x.dtype, device=x.device) if shift is None else shift
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    kernel(x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt), scale, shift, y, attrs,
           torch.cuda.current_stream().cuda_stream, name)
    return y


def compare(y, ref, precision: str) -> dict:
    max_abs = (y.double() - ref).abs().max().item()
    max_rel = max_abs / max(ref.abs().max().item(), 1e-30)
    metric, bound = TOLERANCE[precision]
    value = max_abs if metric == "max_abs" else max_rel
    return {"max_abs": max_abs, "max_rel": max_rel, "passed": value <= bound}


def check_kernels(kernel) -> list[dict]:
    import torch

    from rednet.ops.cuda import KernelDoesNotFit
    from rednet.ops.involution import involution_strided
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for k, s, d, g, n, c, h, w in SWEEP:
        p = (k - 1) // 2 * d
        for epilogue in (False, True):
            activation = int(epilogue)
            for precision in PRECISIONS:
                dtype = torch.float16 if precision == "fp16" else torch.float32
                x, weight, scale, shift = _inputs(n, c, h, w, k, s, p, d, g, dtype, gen, epilogue)
                ref = involution_strided(x.double(), weight.double(), k, s, p, d, g,
                                         None if scale is None else scale.double(),
                                         None if shift is None else shift.double(), activation)
                for layout in LAYOUTS:
                    for name in (None, *kernel.kernel_names()):
                        row = {"x": [n, c, h, w], "kernel_size": k, "stride": s, "padding": p, "dilation": d,
                               "groups": g, "epilogue": epilogue, "precision": precision, "layout": layout,
                               "kernel": name or "launcher"}
                        try:
                            out = []
                            row["cuda_kernels"] = cuda_kernels_of(lambda: out.append(run_kernel(
                                kernel, x, weight, scale, shift, (k, s, p, d, g, activation), layout, name)))
                            row.update(compare(out[0], ref, precision))
                        except KernelDoesNotFit as e:
                            row.update(passed=None, not_run=str(e))
                        except RuntimeError as e:
                            row.update(passed=False, error=str(e))
                        rows.append(row)
    return rows


def check_torch_op() -> list[dict]:
    """rednet::involution on CUDA tensors, NCHW and channels_last: its forward runs our kernel (kernel names from
    the profiler), matches the fp64 formulation, and its gradients match the CPU's in fp64."""
    import torch

    from rednet.ops import involution
    from rednet.ops.involution import involution_strided
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(1)
    for k, s, d, g, n, c, h, w in (SWEEP[1], SWEEP[5]):
        p = (k - 1) // 2 * d
        for precision in PRECISIONS:
            dtype = torch.float16 if precision == "fp16" else torch.float32
            x0, weight0, scale, shift = _inputs(n, c, h, w, k, s, p, d, g, dtype, gen, True)
            ref = involution_strided(x0.double(), weight0.double(), k, s, p, d, g, scale.double(), shift.double(), 1)
            for layout in LAYOUTS:
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x, weight = (t.contiguous(memory_format=fmt).requires_grad_(True) for t in (x0, weight0))
                out = []
                kernels = cuda_kernels_of(lambda: out.append(involution(x, weight, k, s, p, d, g, scale, shift, 1)))
                y = out[0]
                row = {"x": [n, c, h, w], "kernel_size": k, "stride": s, "precision": precision, "layout": layout,
                       "y_channels_last": not y.is_contiguous(), "cuda_kernels": kernels,
                       "ran_our_kernel": any(OUR_KERNELS in name for name in kernels),
                       **compare(y.detach(), ref, precision)}
                # gradients without the ReLU: its mask may flip where fp32 and fp64 round a value near 0 differently
                y = involution(x, weight, k, s, p, d, g, scale, shift, 0)
                grad_out = torch.randn(y.shape, device="cuda", generator=gen).to(dtype)
                gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
                xc, wc = (t.detach().cpu().double().requires_grad_(True) for t in (x, weight))
                yc = involution(xc, wc, k, s, p, d, g, scale.cpu().double(), shift.cpu().double(), 0)
                gxc, gwc = torch.autograd.grad(yc, (xc, wc), grad_out.cpu().double())
                row["grad_max_rel"] = max(((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                                          for a, b in ((gx, gxc), (gw, gwc)))
                # fp16 gradients are rounded to fp16 (2^-11 relative) after fp32 accumulation
                # channels_last in, channels_last out: no transposes around the op in a channels_last network
                row["passed"] = (row["passed"] and row["ran_our_kernel"] and row["grad_max_rel"] <= (
                    1e-5 if precision == "fp32" else 2e-3) and row["y_channels_last"] == (layout == "channels_last"))
                rows.append(row)
    return rows


# ---- (b) plugin ------------------------------------------------------------------------------------------------

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


# ---- (c) kernel benchmark --------------------------------------------------------------------------------------

def bench_kernels(kernel, batches, repeats: int, progress=print) -> list[dict]:
    import torch
    rows = []
    for batch in batches:
        for c, h, w, k, s, g in REDNET50_SHAPES:
            p, d = (k - 1) // 2, 1
            ho, wo = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
            for precision in PRECISIONS:
                dtype = torch.float16 if precision == "fp16" else torch.float32
                x = torch.randn(batch, c, h, w, device="cuda", dtype=dtype)
                weight = torch.randn(batch, g * k * k, ho, wo, device="cuda", dtype=dtype)
                scale, shift = torch.ones(c, device="cuda", dtype=dtype), torch.zeros(c, device="cuda", dtype=dtype)
                moved = (x.numel() + weight.numel() + batch * c * ho * wo) * x.element_size()
                src = torch.empty(moved // 2, device="cuda", dtype=torch.uint8)  # read + written = moved
                dst = torch.empty_like(src)
                attrs = (k, s, p, d, g, 1)
                # each layout's tensors made once: the timed region is the kernel alone
                x_cl, weight_cl = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
                y = torch.empty(batch, c, ho, wo, device="cuda", dtype=dtype)
                y_cl = torch.empty_like(y, memory_format=torch.channels_last)

                def launch(xs, ws, ys, name=None):
                    kernel(xs, ws, scale, shift, ys, attrs, torch.cuda.current_stream().cuda_stream, name)
                candidates = {
                    "launcher": lambda: launch(x, weight, y),
                    "launcher_channels_last": lambda: launch(x_cl, weight_cl, y_cl),
                    "per_pixel": lambda: launch(x, weight, y, PER_PIXEL),
                    "copy": lambda: dst.copy_(src),
                    "unfold": lambda: unfold_involution(x, weight, k, s, p, d, g),
                }
                row = {"x": [batch, c, h, w], "kernel_size": k, "stride": s, "groups": g, "batch": batch,
                       "precision": precision, "bytes": moved, "us": {}, "timing": {}, "not_run": {}}
                for key, fn in candidates.items():
                    try:
                        if key.startswith("launcher") or key == "per_pixel":
                            row.setdefault("cuda_kernels", {})[key] = cuda_kernels_of(fn)
                        row["us"][key], row["timing"][key] = time_us(fn, repeats if key != "unfold" else 3)
                    except torch.cuda.OutOfMemoryError as e:
                        torch.cuda.empty_cache()
                        row["not_run"][key] = f"out of memory: {e}"
                row["gb_per_s"] = {key: moved / us / 1e3 for key, us in row["us"].items()}
                derive_ratios(row)
                rows.append(row)
                progress(f"  x({batch}, {c}, {h}, {w}) K{k} s{s} {precision}: "
                         + ", ".join(f"{key} {us:.1f} µs" for key, us in row["us"].items()))
                del x, weight, x_cl, weight_cl, y, y_cl, src, dst
    return rows


def derive_ratios(row: dict) -> None:
    us = row["us"]
    if "copy" in us:
        row["fraction_of_copy"] = {key: us["copy"] / v for key, v in us.items() if key != "copy"}
    if "launcher" in us:
        for base in ("per_pixel", "unfold"):
            if base in us:
                row[f"speedup_over_{base}"] = us[base] / us["launcher"]


# ---- (d) end to end --------------------------------------------------------------------------------------------

def bench_models(batches, repeats: int, progress=print) -> dict:
    import torch

    import rednet
    torch.backends.cudnn.benchmark = True
    models = {}
    rednet50 = rednet.create_model("rednet50").eval()
    fused = rednet.fuse_involution_epilogues(rednet50)
    for name, model in (("rednet50", rednet50), ("resnet50", rednet.create_model("resnet50").eval())):
        models[name] = model.half().cuda().to(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224, device="cuda").half().contiguous(memory_format=torch.channels_last)
            for name, model in models.items():
                for _ in range(3):
                    model(x)  # cuDNN picks its algorithms
                ms = [time_us_eager(lambda: model(x), repeats) / 1e3 for _ in range(3)]
                rows.append({"model": name, "batch": batch, "ms": statistics.median(ms), "ms_runs": ms})
                progress(f"  {name} batch {batch}: {statistics.median(ms):.3f} ms")
        launches = cuda_launches(lambda: models["rednet50"](x))
    return {"settings": "eager, torch.inference_mode, fp16, channels_last, cudnn.benchmark", "fused_epilogues": fused,
            "involution_kernel_launches_per_forward": sum(OUR_KERNELS in k for k in launches), "rows": rows,
            "rednet50_over_resnet50": latency_ratios(rows)}


def latency_ratios(rows: list[dict]) -> dict[str, float]:
    """RedNet-50 latency over ResNet-50's per batch (keys are batch strings, as JSON keeps them)."""
    ms = {(r["model"], r["batch"]): r["ms"] for r in rows}
    return {str(batch): ms["rednet50", batch] / ms["resnet50", batch]
            for (model, batch) in ms if model == "rednet50" and ("resnet50", batch) in ms}


def time_us_eager(fn, repeats: int) -> float:
    """µs per call of ``fn`` run ``repeats`` times back to back between two events (what a user's loop sees)."""
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / repeats


# ---- report ----------------------------------------------------------------------------------------------------

def evaluate_targets(bench: list[dict], models: dict | None) -> dict:
    """Each target's measured values and whether it is met (None: not measured)."""
    large = [r for r in bench if r["x"][2] in LARGE_LAYER_SIZES and r["precision"] == "fp16" and r["batch"] == 32]
    fractions = [r.get("fraction_of_copy", {}).get("launcher") for r in large]
    speedups = [r.get("speedup_over_per_pixel") for r in bench]
    ratio = (models or {}).get("rednet50_over_resnet50", {}).get("32")

    def verdict(values, ok):
        if not values or any(v is None for v in values):
            return None
        return all(ok(v) for v in values)
    t = TARGETS
    return {
        "large_layers_fp16_bs32_fraction_of_copy": {
            "values": fractions, "met": verdict(fractions, lambda v: v >= t["large_layers_fp16_bs32_fraction_of_copy"]["min"])},
        "speedup_over_per_pixel": {
            "min_value": min((v for v in speedups if v is not None), default=None),
            "met": verdict(speedups, lambda v: v >= t["speedup_over_per_pixel"]["min"])},
        "rednet50_over_resnet50_fp16_bs32": {
            "value": ratio, "met": verdict([ratio], lambda v: v <= t["rednet50_over_resnet50_fp16_bs32"]["max"])},
    }


def parity_passed(report: dict) -> bool:
    """Every parity row that ran passed (a named kernel that does not fit a case, passed None, runs nothing), some
    ran, and the plugin's check passed."""
    rows = report["kernel_parity"] + report["torch_op"]
    return all(r["passed"] is not False for r in rows) and any(r["passed"] for r in rows) and report["plugin"]["passed"]


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(batch, precision) for batch in sorted({r["batch"] for r in report["bench"]}) for precision in PRECISIONS]
    columns = 3
    rows_of_panels = -(-(len(panels) + 1) // columns)
    fig, grid = plt.subplots(rows_of_panels, columns, figsize=(6 * columns, 4.5 * rows_of_panels), squeeze=False)
    axes = list(grid.flat)
    for unused in axes[len(panels) + 1:]:
        unused.set_visible(False)
    series = [("copy", "device copy (same bytes)"), ("launcher", "ours, launcher (NCHW)"),
              ("launcher_channels_last", "ours, launcher (channel-last)"), ("per_pixel", "per-pixel kernel"),
              ("unfold", "unfold formulation")]
    for ax, (batch, precision) in zip(axes, panels):
        rows = [r for r in report["bench"] if r["batch"] == batch and r["precision"] == precision]
        labels = [f"{r['x'][1]}×{r['x'][2]}² K{r['kernel_size']}s{r['stride']}" for r in rows]
        width = 0.8 / len(series)
        for i, (key, name) in enumerate(series):
            values = [r["gb_per_s"].get(key, float("nan")) for r in rows]
            ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(rows))], values, width, label=name)
        ax.set_xticks(range(len(rows)), labels, rotation=35, fontsize=7)
        ax.set_ylabel("effective GB/s (x + weight read, y written)")
        ax.set_yscale("log")
        ax.set_title(f"RedNet-50 involutions, batch {batch}, {precision}", fontsize=9)
    axes[0].legend(fontsize=7)
    models = report.get("models") or {}
    ratios = models.get("rednet50_over_resnet50", {})
    ax = axes[len(panels)]
    ax.bar(list(ratios), list(ratios.values()), color="tab:purple")
    ax.axhline(TARGETS["rednet50_over_resnet50_fp16_bs32"]["max"], color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("batch")
    ax.set_ylabel("RedNet-50 / ResNet-50 latency")
    ax.set_title("PyTorch eager, fp16, channels_last", fontsize=9)
    fig.suptitle(f"make gpu-check on {report['gpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"gpu_check_{gpu_slug(report['gpu'])}"
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    json_path.write_text(json.dumps(report, indent=2))
    plot(report, png_path)
    return json_path, png_path


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch on this machine; run it on a GPU machine", file=sys.stderr)
        return 3
    build = Path(args.build)
    capi = build / "librednet_cuda_capi.so"
    if not capi.is_file():
        print(f"gpu-check: {capi} missing; build with CUDA first (make gpu-check does)", file=sys.stderr)
        return 3
    import os
    os.environ["REDNET_CUDA_CAPI_LIB"] = str(capi.resolve())  # the torch op's CUDA kernel: this build's
    from rednet.ops import cuda
    kernel = cuda.load(capi)
    t0 = time.time()
    report = {"gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
              "torch": torch.__version__, "cuda": torch.version.cuda, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "targets": TARGETS}
    print(f"gpu-check on {report['gpu']} (sm_{report['capability']})", flush=True)
    print("(a) kernels vs the PyTorch op's formulation, every kernel and layout", flush=True)
    report["kernel_parity"] = check_kernels(kernel)
    ran = [r for r in report["kernel_parity"] if r["passed"] is not None]
    report["kernels_covered_by_parity"] = sorted({k for r in ran for k in r.get("cuda_kernels", [])})
    print(f"    {sum(r['passed'] for r in ran)}/{len(ran)} within tolerance ({len(report['kernel_parity']) - len(ran)} "
          f"named kernels did not fit their case); {len(report['kernels_covered_by_parity'])} distinct CUDA kernels "
          f"ran", flush=True)
    report["torch_op"] = check_torch_op()
    print(f"    torch op on CUDA: {sum(r['passed'] for r in report['torch_op'])}/{len(report['torch_op'])}", flush=True)
    print("(b) plugin through its interfaces", flush=True)
    report["plugin"] = check_plugin(build / "involution_plugin_gpu_check", build / "librednet_trt_plugin.so")
    print(f"    {'pass' if report['plugin']['passed'] else 'FAIL'}", flush=True)
    print(f"(c) RedNet-50 involution shapes, batches {args.batches}", flush=True)
    report["bench"] = bench_kernels(kernel, args.batches, args.repeats, lambda m: print(m, flush=True))
    print(f"(d) RedNet-50 vs ResNet-50 in PyTorch, batches {args.model_batches}", flush=True)
    report["models"] = bench_models(args.model_batches, args.repeats, lambda m: print(m, flush=True))
    report["targets_met"] = evaluate_targets(report["bench"], report["models"])
    report["seconds"] = time.time() - t0
    report["passed"] = parity_passed(report)
    json_path, png_path = write_report(report, Path(args.out_dir))
    print(f"report: {json_path}, {png_path}; checks {'PASS' if report['passed'] else 'FAIL'}; targets "
          f"{ {k: v['met'] for k, v in report['targets_met'].items()} }", flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
