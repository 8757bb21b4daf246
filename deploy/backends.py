"""One Backend interface for parity, benchmarks and the service: numpy batch in, numpy outputs out.

    backend = create_backend("onnxruntime", onnx_path="artifacts/rednet50.onnx")
    logits = backend(batch)            # (N, 3, H, W) float32/float16 -> (N, classes)

Backends: ``torch`` (the reference), ``onnxruntime`` (our custom-op library registered; CPU or CUDA provider),
``onnxruntime-function`` (ONNX Runtime running the portable function bodies), ``tensorrt`` (engine + plugin;
see deploy/tensorrt_backend.py).
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from .ort_session import create_session


class Backend(Protocol):
    name: str
    input_dtype: np.dtype

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """PyTorch eager on CPU (the parity reference)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.float32, name: str = "torch"):
        self.model = model.eval().to(dtype)
        self.name, self.dtype = name, dtype
        self.input_dtype = np.dtype(np.float16 if dtype == torch.float16 else np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.dtype))
        return (out[-1] if isinstance(out, tuple) else out).numpy()


class OnnxRuntimeBackend:
    """ONNX Runtime with (``custom_ops=True``) or without our library."""

    def __init__(self, onnx_model, custom_ops: bool = True, providers: list[str] | None = None,
                 intra_op_threads: int | None = None, name: str | None = None, allow_spinning: bool = True):
        self.session = create_session(onnx_model, custom_ops=custom_ops, providers=providers,
                                      intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
        self.name = name or ("onnxruntime" if custom_ops else "onnxruntime-function")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.dtype(np.float16 if inp.type == "tensor(float16)" else np.float32)
        self.output_name = self.session.get_outputs()[-1].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch.astype(self.input_dtype, copy=False)})[0]


def _tensorrt(**kwargs) -> Backend:
    from .tensorrt_backend import TensorRTBackend
    return TensorRTBackend(**kwargs)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "torch": TorchBackend,
    "onnxruntime": lambda onnx_model, **kw: OnnxRuntimeBackend(onnx_model, custom_ops=True, **kw),
    "onnxruntime-function": lambda onnx_model, **kw: OnnxRuntimeBackend(onnx_model, custom_ops=False, **kw),
    "tensorrt": _tensorrt,
}


def create_backend(name: str, **kwargs) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    return BACKENDS[name](**kwargs)
