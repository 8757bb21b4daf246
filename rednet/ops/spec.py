"""The Involution op contract, loaded from spec/Involution.yaml (the single source of truth).

Every Python-side check of attributes and shapes goes through :func:`check_attributes` and
:func:`check_shapes`, so a rule changes in one place.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Sequence

import yaml

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "Involution.yaml"


@functools.cache
def load_spec() -> dict:
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def attribute_names() -> tuple[str, ...]:
    """Attribute names in contract order: kernel_size, stride, padding, dilation, groups, activation."""
    return tuple(load_spec()["attributes"])


def attribute_defaults() -> dict[str, int]:
    """The attributes a node may omit (activation), with the value an omitted one means."""
    return {name: rule["default"] for name, rule in load_spec()["attributes"].items() if "default" in rule}


def activation_names() -> dict[int, str]:
    """activation attribute values and their names: {0: 'none', 1: 'relu'}."""
    return dict(load_spec()["attributes"]["activation"]["values"])


def output_size(size: int, kernel_size: int, stride: int, padding: int, dilation: int) -> int:
    """The contract's shape rule for one spatial dimension."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def check_attributes(attrs: Mapping[str, int]) -> None:
    """Raise ValueError naming the first attribute that breaks the contract."""
    for name, rule in load_spec()["attributes"].items():
        if name not in attrs and "default" not in rule:
            raise ValueError(f"involution: missing attribute '{name}'")
        value = attrs.get(name, rule.get("default"))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"involution: {name}={value!r} must be an int")
        if "values" in rule and value not in rule["values"]:
            named = ", ".join(f"{v} ({n})" for v, n in rule["values"].items())
            raise ValueError(f"involution: {name}={value} is not one of {named}")
        if value < rule["min"]:
            raise ValueError(f"involution: {name}={value} must be >= {rule['min']}")
        if "max" in rule and value > rule["max"]:
            raise ValueError(f"involution: {name}={value} is outside the supported range (<= {rule['max']})")
        if rule.get("odd") and value % 2 == 0:
            raise ValueError(f"involution: {name}={value} must be odd")


def check_shapes(x_shape: Sequence[int], weight_shape: Sequence[int], attrs: Mapping[str, int],
                 scale_shape: Sequence[int] | None = None, shift_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """Validate the input shapes against the contract; return the output shape (N, C, Ho, Wo).

    scale/shift shapes of None are not checked (the torch op's omitted epilogue).
    """
    check_attributes(attrs)
    k, s, p, d, g = (attrs[n] for n in ("kernel_size", "stride", "padding", "dilation", "groups"))
    if len(x_shape) != 4:
        raise ValueError(f"involution: x must have rank 4 (N, C, H, W), got shape {tuple(x_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"involution: weight must have rank 4 (N, G*K*K, Ho, Wo), got shape {tuple(weight_shape)}")
    n, c, h, w = x_shape
    if c % g != 0:
        raise ValueError(f"involution: channels C={c} is not divisible by groups={g}")
    ho, wo = output_size(h, k, s, p, d), output_size(w, k, s, p, d)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"involution: input H×W={h}×{w} is too small for kernel_size={k}, dilation={d}, "
            f"padding={p} (output would be {ho}×{wo})")
    expected = (n, g * k * k, ho, wo)
    if tuple(weight_shape) != expected:
        raise ValueError(
            f"involution: weight shape {tuple(weight_shape)} does not match the contract "
            f"(N, groups*K*K, Ho, Wo) = {expected} for x shape {tuple(x_shape)}")
    for name, shape in (("scale", scale_shape), ("shift", shift_shape)):
        if shape is not None and tuple(shape) != (c,):
            raise ValueError(f"involution: {name} shape {tuple(shape)} does not match the contract (C,) = ({c},) "
                             f"for x shape {tuple(x_shape)}")
    return (n, c, ho, wo)
