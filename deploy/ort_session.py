"""The one way this project opens an ONNX Runtime session: our custom-op library registered, explicit threads."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from .native import find_library


def create_session(model: str | Path | bytes | onnx.ModelProto, *, custom_ops: bool = True,
                   providers: list[str] | None = None, intra_op_threads: int | None = None,
                   inter_op_threads: int = 1, enable_profiling: bool = False) -> ort.InferenceSession:
    """Open an InferenceSession.

    ``custom_ops=True`` registers librednet_ort_ops (rednet::Involution runs on our kernels); ``False`` leaves
    ONNX Runtime to run each node's portable function body. ``intra_op_threads`` sizes ONNX Runtime's intra-op
    pool, which our kernel uses too (None: ONNX Runtime's default, one per physical core).
    """
    options = ort.SessionOptions()
    if custom_ops:
        options.register_custom_ops_library(str(find_library("ort_ops")))
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.enable_profiling = enable_profiling
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=options, providers=providers or ["CPUExecutionProvider"])
