"""Multiply-add counts with torch's FlopCounterMode (involution counted by the op's registered formula)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-adds of convolutions, linear layers and involutions for one image (FLOPs / 2)."""
    x = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
