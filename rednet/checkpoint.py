"""Loading official (mmcls / det-seg) and our own checkpoints safely and strictly."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or does not match the model."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors only (``weights_only=True``: unpickling arbitrary objects runs code, so it is refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint '{path}' needs arbitrary unpickling (code execution), refused; "
            f"re-save it as a plain state dict of tensors. Loader said: {str(e).splitlines()[0]}") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f"checkpoint '{path}' is unreadable: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint '{path}' holds no state dict of tensors (top level: {type(obj).__name__})")
    return obj


def _adapt_prefixes(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """A backbone-only model accepts classifier checkpoints' ``backbone.`` keys (the head is then unexpected)."""
    if any(k.startswith("backbone.") for k in model_keys) or not any(k.startswith("backbone.") for k in state):
        return state
    return {k.removeprefix("backbone."): v for k, v in state.items()}


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> dict[str, torch.Tensor]:
    """Return ``state`` adapted to the model, or raise CheckpointError with the full key/shape diff."""
    expected = model.state_dict()
    state = _adapt_prefixes(state, set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    conflicts = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if conflicts or (strict and (missing or unexpected)):
        lines = ["checkpoint does not match the model:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape conflicts", conflicts)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {item}" for item in items]
        raise CheckpointError("\n".join(lines))
    return state


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    state = check_state_dict(model, read_state_dict(path), strict=strict)
    model.load_state_dict(state, strict=strict)
    model.checkpoint_sha256 = file_sha256(path)
