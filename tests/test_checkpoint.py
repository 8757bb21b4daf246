"""Checkpoint loading: official mmcls layout, strictness with a readable diff, and refusal of pickled code."""
import hashlib

import pytest
import torch

import rednet
from rednet import CheckpointError


def _save_official(model, path):
    torch.save({"meta": {"epoch": 100, "mmcls_version": "0.1.0"}, "state_dict": model.state_dict()}, path)


def test_official_checkpoint_round_trip(tmp_path):
    src = rednet.create_model("rednet26").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    _save_official(src, tmp_path / "rednet26.pth")
    loaded = rednet.create_model("rednet26", checkpoint=tmp_path / "rednet26.pth")
    assert not loaded.training
    assert loaded.checkpoint_sha256 == hashlib.sha256((tmp_path / "rednet26.pth").read_bytes()).hexdigest()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)


def test_backbone_loads_classifier_style_keys(tmp_path):
    src = rednet.create_model("rednet50_detseg")
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "b.pth")
    rednet.create_model("rednet50_detseg", checkpoint=tmp_path / "b.pth")


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    state = rednet.create_model("rednet26").state_dict()
    del state["head.fc.bias"]
    state["backbone.extra.weight"] = torch.zeros(1)
    state["head.fc.weight"] = torch.zeros(10, 2048)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        rednet.create_model("rednet26", checkpoint=tmp_path / "bad.pth")
    msg = str(info.value)
    assert "missing keys (1)" in msg and "head.fc.bias" in msg
    assert "unexpected keys (1)" in msg and "backbone.extra.weight" in msg
    assert "head.fc.weight: checkpoint (10, 2048) vs model (1000, 2048)" in msg


def test_wrong_depth_is_a_mismatch(tmp_path):
    _save_official(rednet.create_model("rednet26"), tmp_path / "r26.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\)"):
        rednet.create_model("rednet50", checkpoint=tmp_path / "r26.pth")


def test_non_strict_tolerates_missing_keys_not_shapes(tmp_path):
    state = rednet.create_model("rednet26").state_dict()
    del state["head.fc.bias"]
    torch.save(state, tmp_path / "partial.pth")
    rednet.create_model("rednet26", checkpoint=tmp_path / "partial.pth", strict=False)
    state["head.fc.weight"] = torch.zeros(3, 2048)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="shape conflicts"):
        rednet.create_model("rednet26", checkpoint=tmp_path / "partial.pth", strict=False)


class Payload:
    def __reduce__(self):
        return (print, ("this ran code while loading",))


def test_arbitrary_pickle_is_refused(tmp_path, capsys):
    torch.save({"state_dict": {}, "meta": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        rednet.create_model("rednet26", checkpoint=tmp_path / "evil.pth")
    assert "this ran code" not in capsys.readouterr().out


@pytest.mark.parametrize("content,needle", [(b"not a checkpoint", "unreadable"), (None, "does not exist")])
def test_unreadable_files(tmp_path, content, needle):
    path = tmp_path / "x.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        rednet.create_model("rednet26", checkpoint=path)


def test_non_tensor_content_is_refused(tmp_path):
    torch.save({"state_dict": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        rednet.create_model("rednet26", checkpoint=tmp_path / "odd.pth")
