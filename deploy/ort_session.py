"""The one way this project opens an ONNX Runtime session: our custom-op library registered, explicit threads."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from .native import find_library


def create_session(model: str | Path | bytes | onnx.ModelProto, *, custom_ops: bool = True,
                   providers: list[str] | None = None, intra_op_threads: int | None = None,
                   inter_op_threads: int = 1, enable_profiling: bool = False,
                   allow_spinning: bool = True,
                   optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                   ) -> ort.InferenceSession:
    """Open an InferenceSession.

    ``custom_ops=True`` registers librednet_ort_ops (rednet::Involution runs on our kernels); ``False`` leaves
    ONNX Runtime to run each node's portable function body. ``intra_op_threads`` sizes ONNX Runtime's intra-op
    pool, which our kernel uses too (None: ONNX Runtime's default, one per physical core). Sessions that run side
    by side (benchmarks) need ``allow_spinning=False``, or one's idle threads spin on the cores the other needs.
    ``optimization`` is ONNX Runtime's graph optimisation level (ENABLE_ALL includes the NCHWc layout transform).
    """
    options = ort.SessionOptions()
    if custom_ops:
        options.register_custom_ops_library(str(find_library("ort_ops")))
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.enable_profiling = enable_profiling
    options.graph_optimization_level = optimization
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=options, providers=providers or ["CPUExecutionProvider"])
