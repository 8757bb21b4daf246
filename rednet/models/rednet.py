"""RedNet backbone and classifier with the official mmcls module tree (backbone.* / head.fc.*)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import ConvModule, Involution


@dataclass(frozen=True)
class RedNetConfig:
    """Everything that distinguishes one RedNet from another."""
    blocks: tuple[int, int, int, int]
    stem_kernel_size: int = 3
    involution_kernel_size: int = 7
    stem_channels: int = 64
    base_channels: int = 64
    expansion: int = 4
    strides: tuple[int, int, int, int] = (1, 2, 2, 2)


class Bottleneck(nn.Module):
    """1×1 conv → involution(K, stride) → 1×1 conv, with identity or projection shortcut."""

    involution_epilogues = {"conv2": ("bn2", "act2")}  # for fuse_involution_epilogues

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int, expansion: int):
        super().__init__()
        mid = out_channels // expansion
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = Involution(mid, kernel_size, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class RedNet(nn.Module):
    """RedNet backbone: involution stem, max-pool, four stages of bottlenecks; returns the features of
    ``out_indices`` stages as a tuple (like mmcls/mmdet backbones)."""

    def __init__(self, config: RedNetConfig, out_indices: tuple[int, ...] = (3,)):
        super().__init__()
        self.config, self.out_indices = config, out_indices
        half = config.stem_channels // 2
        self.stem = nn.Sequential(
            ConvModule(3, half, 3, stride=2, padding=1),
            Involution(half, config.stem_kernel_size, 1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            ConvModule(half, config.stem_channels, 3, stride=1, padding=1),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = config.stem_channels
        self.res_layers = []
        for i, (num_blocks, stride) in enumerate(zip(config.blocks, config.strides)):
            out_channels = config.base_channels * config.expansion * 2 ** i
            blocks = []
            for j in range(num_blocks):
                blocks.append(Bottleneck(in_channels, out_channels, stride if j == 0 else 1,
                                         config.involution_kernel_size, config.expansion))
                in_channels = out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.res_layers.append(f"layer{i + 1}")
        self.out_channels = in_channels

    def forward(self, x) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.stem(x))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class LinearClsHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(x)


class RedNetClassifier(nn.Module):
    """mmcls ImageClassifier layout: backbone → global average pool (neck) → linear head; returns logits."""

    def __init__(self, config: RedNetConfig, num_classes: int = 1000):
        super().__init__()
        self.backbone = RedNet(config, out_indices=(3,))
        self.neck = nn.AdaptiveAvgPool2d(1)
        self.head = LinearClsHead(self.backbone.out_channels, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.neck(self.backbone(x)[-1]), 1))
