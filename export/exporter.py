"""RedNet → ONNX: torch.onnx (dynamo) with each involution as one rednet::Involution node + its function body."""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import onnx
import onnx.inliner
import torch

import rednet
from rednet.fileio import atomic_write, check_output_path
from rednet.ops import load_spec

from .involution_onnx import DOMAIN, VERSION, Involution, TRANSLATIONS

# torch.onnx warns once per missing torchvision op; nothing here uses torchvision.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
DYNAMIC_MODES = ("batch", "all")
DEFAULT_OPSET = 18
MAX_OPSET = 23  # the newest default-domain opset torch.onnx 2.13 translates to
MIN_DYNAMIC_SIZE = 32  # smallest H/W a DYNAMIC=all model accepts: five stride-2 stages still leave ≥ 1 pixel
MAX_SIZE = 4096  # largest batch and H/W of the exported dynamic axes


@dataclass(frozen=True)
class ExportOptions:
    model: str
    checkpoint: str | None = None
    precision: str = "fp32"
    dynamic: str = "batch"
    opset: int = DEFAULT_OPSET
    with_function: bool = True
    # every Involution node replaced by its function body: pure standard ops, for runtimes that ignore
    # model-local functions (OpenVINO); far slower on ONNX Runtime than the node on our op library
    inline_function: bool = False
    # the BatchNorm + ReLU after each involution folded into its node (scale, shift, activation)
    fuse_epilogue: bool = True
    input_size: int | None = None  # tracing size; defaults to the model's preprocessing input size

    def validate(self) -> None:
        rednet.get_entry(self.model)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.dynamic not in DYNAMIC_MODES:
            raise ValueError(f"dynamic '{self.dynamic}' is not one of {', '.join(DYNAMIC_MODES)}")
        if not DEFAULT_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset {self.opset} is outside {DEFAULT_OPSET}..{MAX_OPSET}, the opsets the exporter "
                             f"targets")
        if self.input_size is not None and not MIN_DYNAMIC_SIZE <= self.input_size <= MAX_SIZE:
            raise ValueError(f"input size {self.input_size} is outside {MIN_DYNAMIC_SIZE}..{MAX_SIZE}")
        if self.inline_function and not self.with_function:
            raise ValueError("inline_function needs the function body: it cannot be combined with with_function=False")


def default_output_path(options: ExportOptions) -> Path:
    suffix = "" if options.precision == "fp32" else f".{options.precision}"
    if options.inline_function:
        suffix += ".inlined"
    return Path("artifacts") / f"{options.model}{suffix}.onnx"


def output_names(model: torch.nn.Module) -> list[str]:
    return ["logits"] if model.entry.task == "classification" else [f"features_{i}" for i in range(4)]


def _dynamic_shapes(mode: str) -> tuple[dict, ...]:
    batch = torch.export.Dim("batch", min=1, max=MAX_SIZE)
    if mode == "batch":
        return ({0: batch},)
    return ({0: batch, 2: torch.export.Dim("height", min=MIN_DYNAMIC_SIZE, max=MAX_SIZE),
             3: torch.export.Dim("width", min=MIN_DYNAMIC_SIZE, max=MAX_SIZE)},)


def function_body(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """The rednet::Involution model-local function (standard ops only), importing the model's default opset.

    Its ops (Pad, Gather, Range, Reshape, ReduceSum, Cast, …) mean the same from opset 18 on; later opsets only
    add types, so the body is valid under whatever opset the model imports.
    """
    proto = Involution.to_function_proto()
    for entry in proto.opset_import:
        if entry.domain == "":
            entry.version = opset
    return proto


def _metadata(model: torch.nn.Module, options: ExportOptions) -> dict[str, str]:
    entry = model.entry
    return {
        "rednet.model": options.model,
        "rednet.task": entry.task,
        "rednet.checkpoint_sha256": getattr(model, "checkpoint_sha256", "") or "",
        "rednet.export_options": json.dumps(asdict(options), sort_keys=True),
        "rednet.preprocess": json.dumps(entry.preprocess, sort_keys=True),
        "rednet.package_version": rednet.__version__,
        "rednet.torch_version": torch.__version__,
        "rednet.op_spec": json.dumps({"domain": DOMAIN, "version": VERSION,
                                      "attributes": list(load_spec()["attributes"])}),
    }


def to_onnx(options: ExportOptions, progress: Callable[[str], None] = lambda msg: None,
            model: torch.nn.Module | None = None) -> onnx.ModelProto:
    """Export a registered model to an ONNX ModelProto (checked, with metadata).

    ``model`` exports an already built instance of ``options.model`` (e.g. fine-tuned) instead of building one.
    """
    options.validate()
    t0 = time.perf_counter()
    step = lambda msg: progress(f"[{time.perf_counter() - t0:6.1f}s] {msg}")  # noqa: E731
    if model is None:
        step(f"building {options.model}" + (f" from {options.checkpoint}" if options.checkpoint else " (random weights)"))
        model = rednet.create_model(options.model, checkpoint=options.checkpoint)
    model = copy.deepcopy(model).eval()
    if options.fuse_epilogue:
        step(f"folded {rednet.fuse_involution_epilogues(model)} BatchNorm+ReLU epilogues into their involutions")
    dtype = PRECISIONS[options.precision]
    model = model.to(dtype)
    size = options.input_size or model.entry.preprocess["input_size"]
    example = torch.randn(2, 3, size, size, dtype=dtype)
    step(f"tracing with torch.export and translating to ONNX opset {options.opset} ({options.precision}, dynamic {options.dynamic})")
    with torch.no_grad():
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=["input"], output_names=output_names(model),
            dynamic_shapes=_dynamic_shapes(options.dynamic), custom_translation_table=TRANSLATIONS,
            opset_version=options.opset, optimize=True, verbose=False)
    proto = program.model_proto
    step("attaching the Involution function body, metadata and checks")
    if options.with_function:
        proto.functions.append(function_body(options.opset))
    proto.producer_name = "rednet-deploy"
    proto.producer_version = rednet.__version__
    for key, value in _metadata(model, options).items():
        proto.metadata_props.add(key=key, value=value)
    if options.inline_function:
        step("inlining the Involution function body (standard ops only)")
        proto = inline_involutions(proto)
    onnx.checker.check_model(proto, full_check=True)
    step(f"done: {count_involutions(proto)} Involution nodes, {len(proto.graph.node)} nodes")
    return proto


def inline_involutions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every rednet::Involution node by its function body and drop the rednet domain."""
    inlined = onnx.inliner.inline_local_functions(proto)
    remaining = {n.domain for n in inlined.graph.node} - {"", "ai.onnx"}
    if remaining:
        raise ValueError(f"inlining left nodes of domains {sorted(remaining)}: the model has no function body for them")
    kept = [o for o in inlined.opset_import if o.domain != DOMAIN]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined


def export(options: ExportOptions, out: str | Path | None = None,
           progress: Callable[[str], None] = lambda msg: None) -> Path:
    out = check_output_path(out or default_output_path(options))  # before minutes of tracing, not after
    proto = to_onnx(options, progress)
    atomic_write(out, lambda tmp: onnx.save(proto, tmp))
    progress(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def count_involutions(proto: onnx.ModelProto) -> int:
    return sum(n.op_type == "Involution" and n.domain == DOMAIN for n in proto.graph.node)
