"""Building blocks with the official (mmcv/mmcls) submodule names, so official state dicts load as-is."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import involution
from ..ops.involution import RELU


class ConvModule(nn.Sequential):
    """conv → (bn) → (ReLU); named ``conv``/``bn``/``activate`` like mmcv's ConvModule (bias only without bn)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.activate = nn.ReLU(inplace=True)


class KernelGenerationPool(nn.Module):
    """avg-pool(stride) that always yields the op's output size ceil(H/stride).

    Ceil mode is only needed where H or W is not a multiple of the stride; where both are static multiples
    (every fixed-size export at RedNet's sizes) floor mode gives the same output, and runtimes have fast paths
    for it (ONNX Runtime runs ceil mode on a generic path, ~7x slower). So the traced graph records floor mode
    there and ceil mode only for odd or dynamic (symbolic) sizes.
    """

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        static_multiple = all(isinstance(size, int) and size % self.stride == 0 for size in x.shape[-2:])
        return F.avg_pool2d(x, self.stride, self.stride, ceil_mode=not static_multiple)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class Involution(nn.Module):
    """Involution layer (Li et al., CVPR 2021), structured like the official ``involution`` module.

    Kernel generation: avg-pool(stride) → 1×1 reduce conv + BN + ReLU (``reduction_ratio``) → 1×1 span conv
    with bias producing G·K² channels (G = channels / ``group_channels``); then the ``rednet::involution`` op.

    Unlike the official module, the pool rounds up (:class:`KernelGenerationPool`), so the generated kernel always
    has the op's output size (ceil(H/stride)); at even sizes this is exactly the official floor-mode pool.

    For inference, :meth:`fuse_epilogue` folds the BatchNorm (and ReLU) that follows into the op's epilogue.
    """

    # the registered op; an instance may use rednet.ops.involution_strided instead, which torch.compile can fuse
    op = staticmethod(involution)

    def __init__(self, channels: int, kernel_size: int, stride: int, reduction_ratio: int = 4,
                 group_channels: int = 16):
        super().__init__()
        if channels % group_channels:
            raise ValueError(f"Involution: channels={channels} is not a multiple of group_channels={group_channels}")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.group_channels = group_channels
        self.groups = channels // group_channels
        self.conv1 = ConvModule(channels, channels // reduction_ratio, 1)
        self.conv2 = ConvModule(channels // reduction_ratio, kernel_size ** 2 * self.groups, 1, norm=False, act=False)
        self.avgpool = KernelGenerationPool(stride) if stride > 1 else nn.Identity()
        # the op's epilogue: None/0 until fuse_epilogue; not in the state dict (official checkpoints load as-is)
        self.register_buffer("epilogue_scale", None, persistent=False)
        self.register_buffer("epilogue_shift", None, persistent=False)
        self.activation = 0

    def forward(self, x):
        weight = self.conv2(self.conv1(self.avgpool(x)))
        return self.op(x, weight, self.kernel_size, self.stride, (self.kernel_size - 1) // 2, 1, self.groups,
                       self.epilogue_scale, self.epilogue_shift, self.activation)

    @torch.no_grad()
    def fuse_epilogue(self, bn: nn.BatchNorm2d, relu: bool) -> None:
        """Fold an eval-mode BatchNorm2d over this layer's output (and a ReLU after it) into the op's epilogue."""
        if self.epilogue_scale is not None:
            raise ValueError("Involution: the epilogue is already fused")
        if bn.training or not bn.track_running_stats or bn.num_features != self.channels:
            raise ValueError(f"Involution: cannot fold {bn} (needs eval mode, running stats and "
                             f"{self.channels} features)")
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.affine:
            shift = shift + bn.bias.double()
        dtype = bn.running_mean.dtype
        self.epilogue_scale, self.epilogue_shift = scale.to(dtype), shift.to(dtype)
        self.activation = RELU if relu else 0

    def extra_repr(self) -> str:
        fused = "" if self.epilogue_scale is None else ", epilogue=bn" + ("+relu" if self.activation == RELU else "")
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}{fused}")


def fuse_involution_epilogues(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d (+ ReLU) that directly follows an Involution into the op; returns the count.

    Inference only (eval mode: BatchNorm's running statistics become constants). Where the layers follow each other
    is known for nn.Sequential (child order) and for modules that name the chain in ``involution_epilogues``
    ({involution: (batchnorm, activation)}, e.g. the RedNet bottleneck); the folded modules become nn.Identity.
    """
    if model.training:
        raise ValueError("fuse_involution_epilogues: call model.eval() first (BatchNorm must use running statistics)")
    chains = []
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for i, name in enumerate(names[:-1]):
                if isinstance(parent._modules[name], Involution) and isinstance(parent._modules[names[i + 1]],
                                                                                 nn.BatchNorm2d):
                    chains.append((parent, name, names[i + 1], names[i + 2] if i + 2 < len(names) else None))
        for inv, (bn, act) in getattr(parent, "involution_epilogues", {}).items():
            if isinstance(parent._modules[bn], nn.BatchNorm2d):  # else folded already
                chains.append((parent, inv, bn, act))
    for parent, inv, bn, act in chains:
        relu = act is not None and isinstance(parent._modules[act], nn.ReLU)
        parent._modules[inv].fuse_epilogue(parent._modules[bn], relu)
        parent._modules[bn] = nn.Identity()
        if relu:
            parent._modules[act] = nn.Identity()
    return len(chains)
