"""CPU benchmarks on ONNX Runtime.

op:    every distinct involution shape of RedNet-50 (224×224): our kernel (single-node model, our library), the
       PyTorch op, and the portable function body (ONNX Runtime without our library), as effective GB/s
       (bytes of x + weight read and y written / time) next to a copy of the same input bytes (read + written)
       measured in the same run with the same thread count. Because these tensors sit in cache and the op does
       K² multiply-adds per output, the op is compute-bound on a CPU: the report also gives its GMAC/s next to an
       fp32 GEMM's, measured in the same run.
model: RedNet-50 vs ResNet-50 (and RedNet-50 through function bodies, the naive export), batch 1 and 8.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import rednet
from export import ExportOptions, to_onnx

from ..backends import OnnxRuntimeBackend
from ..ort_session import create_session
from ..tensorrt_backend import TensorRTBackend, unavailable_reason
from .timing import machine_info, measure


def involution_shapes(model_name: str = "rednet50", size: int = 224) -> list[dict]:
    """Distinct (x shape, attributes) of a model's involutions, in network order, with how often each occurs."""
    model = rednet.create_model(model_name).eval()
    seen: dict[tuple, dict] = {}

    def hook(module, args, _):
        x = args[0]
        key = (tuple(x.shape), module.kernel_size, module.stride, module.groups)
        entry = seen.setdefault(key, {"x": list(x.shape), "kernel_size": module.kernel_size, "stride": module.stride,
                                      "padding": (module.kernel_size - 1) // 2, "dilation": 1,
                                      "groups": module.groups, "count": 0})
        entry["count"] += 1
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, rednet.Involution)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return list(seen.values())


def _op_inputs(shape: dict, batch: int) -> tuple[np.ndarray, np.ndarray]:
    n, c, h, w = batch, *shape["x"][1:]
    k, s, p, d, g = (shape[a] for a in ("kernel_size", "stride", "padding", "dilation", "groups"))
    ho, wo = (rednet.ops.output_size(v, k, s, p, d) for v in (h, w))
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, c, h, w), dtype=np.float32),
            rng.standard_normal((n, g * k * k, ho, wo), dtype=np.float32))


def bench_op(threads: int, batch: int, repeats: int, progress: Callable[[str], None]) -> list[dict]:
    from export.involution_onnx import single_node_model
    torch.set_num_threads(threads)
    rows = []
    for shape in involution_shapes():
        x, weight = _op_inputs(shape, batch)
        attr_map = {a: shape[a] for a in rednet.ops.attribute_names()}
        attrs = tuple(attr_map.values())
        y_bytes = x.nbytes // x.shape[2] // x.shape[3] * weight.shape[2] * weight.shape[3]
        moved = x.nbytes + weight.nbytes + y_bytes
        feeds = {"x": x, "weight": weight}
        ours = create_session(single_node_model(attr_map, with_function=False), intra_op_threads=threads)
        body = create_session(single_node_model(attr_map, with_function=True), custom_ops=False, intra_op_threads=threads)
        tx, tw = torch.from_numpy(x), torch.from_numpy(weight)
        src = torch.empty((x.nbytes + weight.nbytes) // 4)
        dst = torch.empty_like(src)
        timings = {
            "ours": measure(lambda: ours.run(None, feeds), repeats, min_seconds=0.2),
            "torch_op": measure(lambda: rednet.ops.involution(tx, tw, *attrs), repeats, min_seconds=0.2),
            "function_body": measure(lambda: body.run(None, feeds), repeats),
            "copy": measure(lambda: dst.copy_(src), repeats, min_seconds=0.2),
        }
        row = {**shape, "batch": batch, "bytes_moved": moved, "copy_bytes_moved": 2 * src.numel() * 4,
               "ms": {k: v["median_ms"] for k, v in timings.items()}}
        row["gb_per_s"] = {k: (row["copy_bytes_moved"] if k == "copy" else moved) / v["median_ms"] / 1e6
                           for k, v in timings.items()}
        row["fraction_of_copy"] = row["gb_per_s"]["ours"] / row["gb_per_s"]["copy"]
        row["gmac_per_s_ours"] = x.size * attrs[0] ** 2 / x.shape[2] / x.shape[3] * weight.shape[2] * weight.shape[3] \
            / row["ms"]["ours"] / 1e6
        rows.append(row)
        progress(f"  op x{tuple(x.shape)} K{attrs[0]} s{attrs[1]}: ours {row['ms']['ours']:.3f} ms "
                 f"({row['gb_per_s']['ours']:.1f} GB/s, {row['fraction_of_copy']:.0%} of copy, "
                 f"{row['gmac_per_s_ours']:.1f} GMAC/s), torch "
                 f"{row['ms']['torch_op']:.3f} ms, function body {row['ms']['function_body']:.3f} ms")
    return rows


def gemm_gmac_per_s(threads: int, repeats: int) -> float:
    """fp32 GEMM throughput with the same thread count: the CPU's practical multiply-add ceiling."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 1024 ** 3 / measure(lambda: a @ b, repeats)["median_ms"] / 1e6


def bench_models(threads: int, batches: tuple[int, ...], repeats: int, progress: Callable[[str], None]) -> list[dict]:
    """ONNX Runtime CPU rows always; TensorRT rows (GPU, fp16 engines) when TensorRT and a GPU are present."""
    runs: list[tuple[str, Callable]] = []
    for name in ("resnet50", "rednet50"):
        proto = to_onnx(ExportOptions(name))
        runs.append((name, OnnxRuntimeBackend(proto, intra_op_threads=threads)))
        if name == "rednet50":
            runs.append((f"{name} (function body)", OnnxRuntimeBackend(proto, custom_ops=False, intra_op_threads=threads)))
    if unavailable_reason() is None:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("resnet50", "rednet50"):
                path = Path(tmp) / f"{name}.fp16.onnx"
                path.write_bytes(to_onnx(ExportOptions(name, precision="fp16")).SerializeToString())
                runs.append((f"{name} (tensorrt fp16)", TensorRTBackend.from_onnx(path, precision="fp16")))
    else:
        progress(f"  tensorrt rows skipped: {unavailable_reason()}")
    rows = []
    for label, backend in runs:
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            t = measure(lambda: backend(x), repeats)
            rows.append({"model": label, "batch": batch, **t})
            progress(f"  {label:28s} batch {batch}: median {t['median_ms']:.1f} ms over {t['runs']} runs")
    return rows


def ratios(models: list[dict]) -> dict:
    by = {(r["model"], r["batch"]): r["median_ms"] for r in models}
    out = {}
    for (model, batch), ms in by.items():
        if model.startswith("rednet50"):
            baseline = model.replace("rednet50", "resnet50").replace(" (function body)", "")
            if (baseline, batch) in by:
                out[f"{model} / {baseline}, batch {batch}"] = ms / by[(baseline, batch)]
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    ops = result["op"]
    labels = [f"{r['x'][1]}×{r['x'][2]}² s{r['stride']}" for r in ops]
    idx = np.arange(len(ops))
    for i, (key, name) in enumerate([("copy", "copy (same bytes)"), ("ours", "ours (ORT op)"),
                                     ("torch_op", "PyTorch op"), ("function_body", "ONNX function body")]):
        ax1.bar(idx + (i - 1.5) * 0.2, [r["gb_per_s"][key] for r in ops], 0.2, label=name)
    ax1.set_xticks(idx, labels, rotation=20)
    ax1.set_ylabel("effective GB/s (log)")
    ax1.set_yscale("log")
    ax1.set_title(f"RedNet-50 involution shapes, batch {ops[0]['batch']}, {result['threads']} threads")
    ax1.legend()
    models = result["model"]
    names = list(dict.fromkeys(r["model"] for r in models))
    batches = sorted({r["batch"] for r in models})
    for i, b in enumerate(batches):
        ms = [next(r["median_ms"] for r in models if r["model"] == n and r["batch"] == b) / b for n in names]
        ax2.bar(np.arange(len(names)) + (i - 0.5) * 0.4, ms, 0.4, label=f"batch {b}")
    ax2.set_xticks(np.arange(len(names)), names, rotation=10)
    ax2.set_ylabel("ms per image (median)")
    ax2.set_yscale("log")
    ax2.set_title("ONNX Runtime CPU latency per image")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir: Path, threads: int = 2, repeats: int = 10, op_batch: int = 1, model_batches=(1, 8),
        progress: Callable[[str], None] = print) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"op benchmark (RedNet-50 involution shapes, {threads} threads)")
    op = bench_op(threads, op_batch, repeats, progress)
    gemm = gemm_gmac_per_s(threads, repeats)
    progress(f"  fp32 GEMM reference: {gemm:.1f} GMAC/s")
    progress(f"model benchmark (ONNX Runtime CPU, {threads} threads)")
    models = bench_models(threads, tuple(model_batches), repeats, progress)
    result = {"machine": machine_info(), "threads": threads, "op": op, "gemm_gmac_per_s": gemm, "model": models, "ratios": ratios(models)}
    for k, v in result["ratios"].items():
        progress(f"  {k}: {v:.2f}")
    path = out_dir / "ort_cpu.json"
    path.write_text(json.dumps(result, indent=2))
    plot(result, out_dir / "ort_cpu.png")
    progress(f"wrote {path} and {out_dir / 'ort_cpu.png'}")
    return path
