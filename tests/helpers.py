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


def randomise(model, seed=0):
    """Non-trivial weights and BN statistics (eval mode), so equality tests mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("bn.weight") or t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
    return model.eval()
