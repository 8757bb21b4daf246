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


def measure_interleaved(candidates: dict[str, Callable[[], object]], rounds: int = 5, runs_per_round: int = 3,
                        warmup: int = 2, progress: Callable[[str], None] = lambda msg: None) -> dict[str, dict]:
    """Time competing candidates in interleaved A/B/… rounds.

    Each round runs every candidate ``runs_per_round`` times, starting one candidate later each round, so drift of
    a shared machine (other load, clocks, caches) hits all candidates alike instead of whichever ran last.
    Per candidate: the median over all runs, the per-round medians and their spread (min, max).
    """
    if rounds < 1 or runs_per_round < 1:
        raise ValueError(f"rounds={rounds} and runs_per_round={runs_per_round} must be >= 1")
    labels = list(candidates)
    for label in labels:
        for _ in range(warmup):
            candidates[label]()
    runs: dict[str, list[float]] = {label: [] for label in labels}
    round_medians: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            times = []
            for _ in range(runs_per_round):
                t0 = time.perf_counter()
                candidates[label]()
                times.append((time.perf_counter() - t0) * 1e3)
            runs[label] += times
            round_medians[label].append(statistics.median(times))
        progress(f"    round {r + 1}/{rounds}: " + ", ".join(f"{label} {round_medians[label][-1]:.1f}" for label in labels))
    return {label: {"median_ms": statistics.median(runs[label]), "round_medians_ms": round_medians[label],
                    "spread_ms": [min(round_medians[label]), max(round_medians[label])], "runs": len(runs[label])}
            for label in labels}


def paired_ratio(numerator: dict, denominator: dict) -> dict:
    """Ratio of two interleaved candidates: the median and spread of their per-round ratios (same rounds)."""
    per_round = [a / b for a, b in zip(numerator["round_medians_ms"], denominator["round_medians_ms"])]
    return {"median": statistics.median(per_round), "spread": [min(per_round), max(per_round)]}
