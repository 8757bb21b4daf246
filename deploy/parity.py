"""Parity: the same inputs through PyTorch (fp32 reference) and every backend present, with tolerances.

Tolerances are part of the report: fp32 backends must have max|y - ref| <= 1e-4 · max|ref|; fp16 backends must
agree on top-1 for >= 99 % of samples with cosine similarity >= 0.999 for every sample; a TensorRT engine built
with --tf32 is held to the tf32 row (TF32 convolutions keep a 10-bit mantissa).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import rednet
from export.exporter import MIN_DYNAMIC_SIZE
from rednet.fileio import atomic_write

from .backends import Backend, OnnxRuntimeBackend, TorchBackend
from .native import find_library
from .tensorrt_backend import TensorRTBackend, unavailable_reason

TOLERANCES = {
    "fp32": {"max_rel": 1e-4},
    "fp16": {"top1_agreement": 0.99, "cosine_min": 0.999},
    "tf32": {"max_rel": 1e-2},
}


@dataclass
class Metrics:
    max_abs: float
    max_rel: float  # max |y - ref| / max |ref|
    cosine_min: float
    top1_agreement: float

    @staticmethod
    def of(y: np.ndarray, ref: np.ndarray) -> "Metrics":
        y, ref = y.astype(np.float64).reshape(len(y), -1), ref.astype(np.float64).reshape(len(ref), -1)
        diff = np.abs(y - ref)
        cosine = (y * ref).sum(1) / np.maximum(np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1), 1e-300)
        return Metrics(float(diff.max()), float(diff.max() / max(np.abs(ref).max(), 1e-300)), float(cosine.min()),
                       float((y.argmax(1) == ref.argmax(1)).mean()))

    def within(self, precision: str) -> bool:
        tol = TOLERANCES[precision]
        if "max_rel" in tol:
            return self.max_rel <= tol["max_rel"]
        return self.top1_agreement >= tol["top1_agreement"] and self.cosine_min >= tol["cosine_min"]


@dataclass
class CaseResult:
    backend: str
    batch: int
    size: int
    metrics: Metrics
    passed: bool
    seconds: float


@dataclass
class ParityReport:
    model: str
    precision: str
    checkpoint_sha256: str
    onnx: str | None  # the file tested; None when parity exported the model for this run only
    tolerances: dict
    results: list[CaseResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def summary(self) -> dict[str, dict]:
        """Worst case per backend."""
        out: dict[str, dict] = {}
        for r in self.results:
            row = out.setdefault(r.backend, {"max_abs": 0.0, "max_rel": 0.0, "cosine_min": 1.0,
                                             "top1_agreement": 1.0, "passed": True, "cases": 0})
            row["max_abs"] = max(row["max_abs"], r.metrics.max_abs)
            row["max_rel"] = max(row["max_rel"], r.metrics.max_rel)
            row["cosine_min"] = min(row["cosine_min"], r.metrics.cosine_min)
            row["top1_agreement"] = min(row["top1_agreement"], r.metrics.top1_agreement)
            row["passed"] &= r.passed
            row["cases"] += 1
        return out

    def table(self) -> str:
        tested = self.onnx or "a dynamic N/H/W export made for this run (not kept)"
        lines = [f"parity of {self.model} ({self.precision}, {tested}) against PyTorch fp32; "
                 f"tolerance {self.tolerances}",
                 f"{'backend':22s} {'batch':>5s} {'size':>5s} {'max abs':>10s} {'max rel':>10s} "
                 f"{'cos min':>9s} {'top-1':>7s}  result"]
        for r in self.results:
            m = r.metrics
            lines.append(f"{r.backend:22s} {r.batch:5d} {r.size:5d} {m.max_abs:10.3e} {m.max_rel:10.3e} "
                         f"{m.cosine_min:9.6f} {m.top1_agreement:7.1%}  {'ok' if r.passed else 'FAIL'}")
        for name, why in self.skipped.items():
            lines.append(f"{name:22s} skipped: {why}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed, "summary": self.summary()}


def parity_backends(onnx_path: Path, precision: str, engine: Path | None = None, tf32: bool = False
                    ) -> tuple[list[Backend], dict[str, str]]:
    """Every backend present: ONNX Runtime with our library, ONNX Runtime function bodies, TensorRT."""
    backends: list[Backend] = [OnnxRuntimeBackend(onnx_path, custom_ops=False)]
    skipped: dict[str, str] = {}
    if find_library("ort_ops", required=False):
        backends.insert(0, OnnxRuntimeBackend(onnx_path, custom_ops=True))
    else:
        skipped["onnxruntime"] = "librednet_ort_ops.so is not built (make plugins)"
    why_not = unavailable_reason()
    if why_not is None:
        backends.append(TensorRTBackend.from_onnx(onnx_path, precision=precision, engine=engine, tf32=tf32))
    else:
        skipped["tensorrt"] = why_not
    return backends, skipped


def fixed_inputs(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Normalised-image-like inputs, reproducible per (batch, size, seed)."""
    g = np.random.default_rng(seed * 100003 + batch * 1009 + size)
    return g.standard_normal((batch, 3, size, size), dtype=np.float32)


DEFAULT_BATCHES, DEFAULT_SIZES = (1, 3), (224, 161)


def run_parity(model_name: str, checkpoint: str | None = None, precision: str = "fp32",
               batches=None, sizes=None, onnx_path: str | Path | None = None,
               backends: list[Backend] | None = None, progress: Callable[[str], None] = lambda m: None,
               seed: int = 0, tf32: bool = False) -> ParityReport:
    """``onnx_path`` None: a fresh dynamic export, kept for this run only. ``batches``/``sizes`` None: the defaults
    the file accepts."""
    from export import ExportOptions, to_onnx
    model = rednet.create_model(model_name, checkpoint=checkpoint).eval()
    reference = TorchBackend(model)
    with tempfile.TemporaryDirectory() as tmp:
        if onnx_path is None:
            progress(f"exporting {model_name} ({precision}, dynamic N/H/W) for parity")
            proto = to_onnx(ExportOptions(model_name, checkpoint=checkpoint, precision=precision, dynamic="all"),
                            model=model)
            tested = Path(tmp) / f"{model_name}.onnx"
            tested.write_bytes(proto.SerializeToString())
        else:
            tested = Path(onnx_path)
            progress(f"testing {tested}")
            _check_same_weights(tested, model)
        batches, sizes = accepted_inputs(tested, batches, sizes)
        skipped: dict[str, str] = {}
        if backends is None:
            backends, skipped = parity_backends(tested, precision, tf32=tf32)
        tolerances = {getattr(b, "tolerance", precision) for b in backends} | {precision}
        report = ParityReport(model_name, precision, getattr(model, "checkpoint_sha256", ""),
                              None if onnx_path is None else str(onnx_path),
                              TOLERANCES[precision] if len(tolerances) == 1 else {t: TOLERANCES[t] for t in tolerances},
                              skipped=skipped)
        for batch in batches:
            for size in sizes:
                x = fixed_inputs(batch, size, seed)
                ref = reference(x)
                for backend in backends:
                    t0 = time.perf_counter()
                    y = backend(x)
                    metrics = Metrics.of(y, ref)
                    passed = metrics.within(getattr(backend, "tolerance", precision))
                    report.results.append(CaseResult(backend.name, batch, size, metrics, passed,
                                                     time.perf_counter() - t0))
                    progress(f"  {backend.name:22s} batch {batch} size {size}: max rel {metrics.max_rel:.2e}, "
                             f"top-1 {metrics.top1_agreement:.0%}")
    return report


def _load_graph_header(onnx_path: Path):
    """The ModelProto without external weights; ValueError naming the file when it is not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} does not exist or is not a file")
    try:
        return onnx.load(onnx_path, load_external_data=False)
    except DecodeError as e:
        raise ValueError(f"{onnx_path} is not an ONNX model ({e})") from None


def accepted_inputs(onnx_path: Path, batches=None, sizes=None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Batches and square sizes for the file's input (N, 3, H, W): the defaults where its axes are dynamic, its
    own size where fixed; requested values it cannot take are a ValueError naming them."""
    graph = _load_graph_header(onnx_path).graph
    if not graph.input:
        raise ValueError(f"{onnx_path}: the graph has no input")
    dims = graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(fixed) != 4:
        raise ValueError(f"{onnx_path}: input has rank {len(fixed)}, parity feeds (N, 3, H, W)")
    if fixed[2] != fixed[3]:
        raise ValueError(f"{onnx_path}: input H×W is {fixed[2] or 'dynamic'}×{fixed[3] or 'dynamic'}; parity feeds "
                         f"square inputs, so both must be dynamic or equal")
    chosen = []
    for what, fixed_value, requested, default in (("batch", fixed[0], batches, DEFAULT_BATCHES),
                                                  ("size", fixed[2], sizes, DEFAULT_SIZES)):
        if fixed_value is None:
            chosen.append(tuple(requested or default))
            if what == "size" and min(chosen[-1]) < MIN_DYNAMIC_SIZE:
                raise ValueError(f"size {min(chosen[-1])} is below {MIN_DYNAMIC_SIZE}, the smallest input RedNet "
                                 f"takes (five stride-2 stages)")
            continue
        wrong = [v for v in requested or () if v != fixed_value]
        if wrong:
            raise ValueError(f"{onnx_path} has a fixed {what} of {fixed_value}: {what} {wrong[0]} cannot be tested "
                             f"(export with --dynamic all for other sizes)")
        chosen.append((fixed_value,))
    return chosen[0], chosen[1]


def _check_same_weights(onnx_path: Path, model: torch.nn.Module) -> None:
    meta = {p.key: p.value for p in _load_graph_header(onnx_path).metadata_props}
    recorded, ours = meta.get("rednet.checkpoint_sha256", ""), getattr(model, "checkpoint_sha256", "")
    if not recorded or recorded != ours:
        raise ValueError(
            f"{onnx_path} was exported from checkpoint sha256 '{recorded or 'none (random weights)'}' but parity "
            f"runs PyTorch on '{ours or 'none (random weights)'}': pass the checkpoint it was exported from, or "
            f"export it again from this one")


def write_report(report: ParityReport, path: str | Path) -> Path:
    text = json.dumps(report.to_json(), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
