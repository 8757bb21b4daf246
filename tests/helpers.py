import torch

from rednet.ops import output_size


def unfold_involution(x, weight, kernel_size, stride, padding, dilation, groups):
    """The official formulation (unfold, multiply, sum) — an independent oracle for the op, computed in fp64."""
    n, c, h, w = x.shape
    ho, wo = (output_size(s, kernel_size, stride, padding, dilation) for s in (h, w))
    cols = torch.nn.functional.unfold(x.double(), kernel_size, dilation, padding, stride)
    cols = cols.view(n, groups, c // groups, kernel_size ** 2, ho, wo)
    taps = weight.double().view(n, groups, 1, kernel_size ** 2, ho, wo)
    return (cols * taps).sum(dim=3).view(n, c, ho, wo)


def random_inputs(n, c, h, w, kernel_size, stride, padding, dilation, groups, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ho, wo = (output_size(s, kernel_size, stride, padding, dilation) for s in (h, w))
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    weight = torch.randn(n, groups * kernel_size ** 2, ho, wo, generator=g).to(dtype)
    return x, weight
