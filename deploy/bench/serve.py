"""`make bench-serve`: throughput and p50/p99 latency of the service vs concurrency, batching on vs off, on the
ONNX Runtime backend of this machine (tritonclient over HTTP, binary tensors, one image per request)."""
from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from export import ExportOptions, export

from ..serve.process import ServerProcess
from .timing import machine_info

LEVELS = (1, 2, 4, 8, 16, 32, 64)
MODES = {"batching on": ("--max-batch", "8", "--max-delay-ms", "5"), "batching off": ("--max-batch", "1", "--max-delay-ms", "0")}


def _metric(text: str, name: str) -> float:
    return float(next((line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")), "0"))


def load_level(server: ServerProcess, model: str, concurrency: int, requests: int, size: int) -> dict:
    import httpx
    import tritonclient.http as triton
    url = server.url
    before = httpx.get(f"{url}/metrics").text
    per_client = max(1, requests // concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)

    def client_loop():
        client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=300)
        for _ in range(per_client):
            inp = triton.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            t0 = time.perf_counter()
            try:
                client.infer(model, [inp])
                latencies.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))
    threads = [threading.Thread(target=client_loop) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = httpx.get(f"{url}/metrics").text
    batches = _metric(after, "rednet_batch_size_count") - _metric(before, "rednet_batch_size_count")
    samples = _metric(after, "rednet_batch_size_sum") - _metric(before, "rednet_batch_size_sum")
    lat = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors),
            "throughput_per_s": len(lat) / wall, "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
            "mean_batch": samples / batches if batches else 0.0, "server_rss_mb": server.rss_bytes() / 2**20}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, rows in result["modes"].items():
        c = [r["concurrency"] for r in rows]
        ax1.plot(c, [r["throughput_per_s"] for r in rows], marker="o", label=mode)
        ax2.plot(c, [r["p50_ms"] for r in rows], marker="o", label=f"{mode} p50")
        ax2.plot(c, [r["p99_ms"] for r in rows], marker="x", linestyle="--", label=f"{mode} p99")
    for ax, label in ((ax1, "images / s"), (ax2, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.legend()
    ax2.set_yscale("log")
    fig.suptitle(f"{result['model']} {result['size']}² on ONNX Runtime CPU, {result['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir: Path, model: str = "rednet50", size: int = 224, threads: int = 2, requests_per_level: int = 64,
        progress: Callable[[str], None] = print) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "model": model, "size": size, "threads": threads, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(ExportOptions(model, input_size=size), Path(tmp) / f"{model}.onnx")
        for mode, flags in MODES.items():
            progress(f"{mode}: starting the server")
            with ServerProcess(onnx_path, *flags, "--max-queue", "1024", model=model, threads=threads) as server:
                rows = []
                for level in LEVELS:
                    row = load_level(server, model, level, max(requests_per_level, 2 * level), size)
                    rows.append(row)
                    progress(f"  {mode:12s} concurrency {level:3d}: {row['throughput_per_s']:6.1f} img/s, "
                             f"p50 {row['p50_ms']:7.1f} ms, p99 {row['p99_ms']:7.1f} ms, "
                             f"mean batch {row['mean_batch']:.1f}, errors {row['errors']}, "
                             f"server RSS {row['server_rss_mb']:.0f} MiB")
                result["modes"][mode] = rows
    path = out_dir / "serve_cpu.json"
    path.write_text(json.dumps(result, indent=2))
    plot(result, out_dir / "serve_cpu.png")
    progress(f"wrote {path} and {out_dir / 'serve_cpu.png'}")
    return path
