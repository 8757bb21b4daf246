"""RedNet models: structure vs the official layouts, size, FLOPs, shapes, and equality with the official forward."""
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rednet
from rednet.models.layers import Involution
from helpers import randomise, unfold_involution

REFERENCE = Path(__file__).parent / "data" / "reference"
CLASSIFIERS = ["rednet26", "rednet38", "rednet50", "rednet101", "rednet152"]
# (params in M, multiply-adds at 224×224 in G): params from the official README / paper table; multiply-adds are
# conv + linear + involution as rednet.count_macs counts them. Sources and cross-checks: data/reference/README.md.
PAPER = {"rednet26": (9.23, 1.685), "rednet38": (12.39, 2.167), "rednet50": (15.54, 2.649),
         "rednet101": (25.65, 4.659), "rednet152": (33.99, 6.679)}


def read_layout(path):
    rows = (line.rstrip("\n").split("\t") for line in open(path) if not line.startswith("#"))
    return {key: tuple(int(d) for d in shape.strip("(),").split(",") if d.strip()) for key, shape in rows}


def layout(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_state_dict_layout_equals_official(name):
    assert layout(rednet.create_model(name)) == read_layout(REFERENCE / f"{name}_cls_state_dict.txt")


def test_detseg_backbone_layout_equals_official():
    ref = read_layout(REFERENCE / "rednet50_det_seg_backbone_state_dict.txt")
    assert layout(rednet.create_model("rednet50_detseg")) == ref


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_params_and_macs_match_paper(name):
    model = rednet.create_model(name).eval()
    params_m, macs_g = PAPER[name]
    assert abs(rednet.count_params(model) / 1e6 - params_m) <= 0.01
    assert abs(rednet.count_macs(model) / 1e9 - macs_g) <= 0.005 * macs_g


def test_involution_count():
    model = rednet.create_model("rednet50")
    assert sum(isinstance(m, Involution) for m in model.modules()) == 17


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("size", [224, 225, 97])
def test_logits_shape_any_input_size(name, size):
    model = rednet.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_detseg_returns_four_feature_maps():
    model = rednet.create_model("rednet50_detseg").eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 225, 161))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 57, 41), (1, 512, 29, 21), (1, 1024, 15, 11), (1, 2048, 8, 6)]
    assert model.stem[1].kernel_size == 7


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match="rednet50.*rednet152"):
        rednet.create_model("rednet51")


def official_involution_forward(self, x):
    """The official module's forward (d-li14/involution, det/mmdet/models/utils/involution_naive.py) in functional
    ops on the layer's parameters, found by the official key names, so it shares no code with our layer: floor-mode
    AvgPool2d(stride) → 1×1 conv → BN (mmcv's default eps 1e-5) → ReLU → 1×1 conv with bias → unfold, multiply, sum
    with group_channels=16, K=kernel_size, padding (K−1)/2."""
    params = {**dict(self.named_parameters()), **dict(self.named_buffers())}
    pooled = F.avg_pool2d(x, self.stride, self.stride) if self.stride > 1 else x
    reduced = F.conv2d(pooled, params["conv1.conv.weight"])
    reduced = F.relu(F.batch_norm(reduced, params["conv1.bn.running_mean"], params["conv1.bn.running_var"],
                                  params["conv1.bn.weight"], params["conv1.bn.bias"], training=False, eps=1e-5))
    weight = F.conv2d(reduced, params["conv2.conv.weight"], params["conv2.conv.bias"])
    k = math.isqrt(params["conv2.conv.weight"].shape[0] // (x.shape[1] // 16))
    return unfold_involution(x, weight, k, self.stride, (k - 1) // 2, 1, x.shape[1] // 16).to(x.dtype)


@pytest.mark.parametrize("name", ["rednet26", "rednet50_detseg"])
def test_outputs_equal_official_formulation(name, monkeypatch):
    model = randomise(rednet.create_model(name))
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        ours = model(x)
        monkeypatch.setattr(Involution, "forward", official_involution_forward)
        official = model(x)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), official if isinstance(official, tuple) else (official,)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_model_trains():
    model = rednet.create_model("rednet26", num_classes=4).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 3]))
    loss.backward()
    stem_inv = model.backbone.stem[1].conv2.conv.weight
    assert stem_inv.grad is not None and stem_inv.grad.abs().sum() > 0
    opt.step()


@pytest.mark.parametrize("name", ["rednet26", "rednet50"])
def test_fused_epilogues_give_the_same_outputs(name):
    """fuse_involution_epilogues folds every involution's BatchNorm + ReLU (stem and bottlenecks) into the op."""
    model = randomise(rednet.create_model(name))
    fused = copy.deepcopy(model)
    count = rednet.fuse_involution_epilogues(fused)
    assert count == sum(isinstance(m, Involution) for m in model.modules())
    assert all(m.activation == 1 and m.epilogue_scale is not None for m in fused.modules() if isinstance(m, Involution))
    assert not any(isinstance(b.bn2, torch.nn.BatchNorm2d) for b in fused.modules() if hasattr(b, "bn2"))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, y = model(x), fused(x)
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_fusing_needs_eval_mode_and_happens_once():
    model = rednet.create_model("rednet26")
    with pytest.raises(ValueError, match="model.eval"):
        rednet.fuse_involution_epilogues(model)
    model.eval()
    assert rednet.fuse_involution_epilogues(model) == 9
    assert rednet.fuse_involution_epilogues(model) == 0  # nothing left to fold: the BatchNorms are gone
    layer = next(m for m in model.modules() if isinstance(m, Involution))
    with pytest.raises(ValueError, match="already fused"):
        layer.fuse_epilogue(torch.nn.BatchNorm2d(layer.channels).eval(), relu=True)


def test_fused_model_keeps_the_official_state_dict_keys():
    """The epilogue buffers are not persistent: a fused model still loads the official checkpoints' keys."""
    model = rednet.create_model("rednet26").eval()
    keys = set(model.state_dict())
    rednet.fuse_involution_epilogues(model)
    assert {k for k in set(model.state_dict()) if ".bn2." not in k and "stem.2." not in k} == \
        {k for k in keys if ".bn2." not in k and "stem.2." not in k}


@pytest.mark.parametrize("affine, relu", [(True, True), (True, False), (False, True)])
def test_fuse_epilogue_equals_the_batchnorm_it_folds(affine, relu):
    """One layer against BatchNorm2d (+ ReLU) itself, with an eps large enough that leaving it out shows."""
    g = torch.Generator().manual_seed(3)
    layer = randomise(Involution(32, 3, 1))
    bn = torch.nn.BatchNorm2d(32, eps=0.3, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(32, generator=g))
        bn.running_var.copy_(torch.rand(32, generator=g) + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(32, generator=g))
            bn.bias.copy_(torch.randn(32, generator=g))
    bn.eval()
    x = torch.randn(2, 32, 9, 9, generator=g)
    with torch.no_grad():
        ref = bn(layer(x))
        ref = ref.relu() if relu else ref
        layer.fuse_epilogue(bn, relu)
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
