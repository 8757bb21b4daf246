"""Model registry and factory: ``create_model("rednet50", checkpoint=...)`` (timm style)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from torch import nn

from .checkpoint import load_checkpoint
from .models.rednet import RedNet, RedNetClassifier, RedNetConfig
from .models.resnet import ResNet

# ImageNet preprocessing of the official mmcls configs (pixel values in 0..255, RGB).
IMAGENET_PREPROCESS = {
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "resize": 256,
    "input_size": 224,
    "color": "RGB",
    "pixel_range": 255,
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[int], nn.Module]  # num_classes -> model
    task: str  # "classification" (logits) or "backbone" (tuple of feature maps)
    description: str
    preprocess: dict = field(default_factory=lambda: dict(IMAGENET_PREPROCESS))


def _classifier(config: RedNetConfig, num_classes: int) -> nn.Module:
    return RedNetClassifier(config, num_classes=num_classes)


def _backbone(config: RedNetConfig, num_classes: int) -> nn.Module:
    return RedNet(config, out_indices=(0, 1, 2, 3))


_DEPTHS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

MODELS: dict[str, ModelEntry] = {
    **{f"rednet{d}": ModelEntry(f"rednet{d}", partial(_classifier, RedNetConfig(blocks)), "classification",
                                f"RedNet-{d} ImageNet classifier (official mmcls checkpoint layout)")
       for d, blocks in _DEPTHS.items()},
    **{f"rednet{d}_detseg": ModelEntry(f"rednet{d}_detseg", partial(_backbone, RedNetConfig(_DEPTHS[d], stem_kernel_size=7)),
                                       "backbone", f"RedNet-{d} det/seg backbone (stem involution K=7, four feature maps)")
       for d in (50, 101)},
    "resnet50": ModelEntry("resnet50", lambda num_classes: ResNet((3, 4, 6, 3), num_classes), "classification",
                           "ResNet-50 (torchvision architecture), the baseline of the benchmarks"),
}


def list_models() -> list[str]:
    return list(MODELS)


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, checkpoint: str | Path | None = None, num_classes: int = 1000,
                 strict: bool = True, pretrained_eval: bool = True) -> nn.Module:
    """Build a registered model; optionally load an (official or our own) checkpoint.

    ``checkpoint`` is read with ``torch.load(weights_only=True)``; key or shape mismatches raise
    :class:`rednet.checkpoint.CheckpointError` listing the differences (``strict=False`` tolerates missing
    and unexpected keys, never shape conflicts). A model built from a checkpoint is put in eval mode
    unless ``pretrained_eval=False``.
    """
    entry = get_entry(name)
    model = entry.build(num_classes)
    model.entry = entry
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict)
        if pretrained_eval:
            model.eval()
    return model
