"""Timing helpers shared by the benchmarks: warm-up, then the median of repeated runs."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def measure(fn: Callable[[], object], repeats: int = 10, warmup: int = 3, min_seconds: float = 0.0) -> dict:
    """Run ``fn`` ``warmup`` times, then at least ``repeats`` times (and for at least ``min_seconds``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, "runs": len(times)}


def machine_info() -> dict:
    import os
    import platform

    import onnxruntime
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
