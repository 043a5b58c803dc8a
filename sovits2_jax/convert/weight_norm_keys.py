"""Conversion rules for weight-normed torch convs <-> our ``WeightNorm`` wrapper.

torch writes weight norm either as ``<m>.parametrizations.weight.original0`` (g) / ``original1`` (v) (current
``torch.nn.utils.parametrizations.weight_norm``) or as ``<m>.weight_g`` / ``<m>.weight_v`` (the older hook).
Reading accepts both; writing uses the style asked for (the parametrizations style by default). Ours: ``<m>.g``
[n], ``<m>.layer.kernel`` (v in our layout), ``<m>.layer.bias``.
"""

from __future__ import annotations

import numpy as np

from sovits2_jax.convert.mapping import Rule, register_transform

PARAMETRIZATIONS = "parametrizations"
LEGACY = "legacy"
STYLES = (PARAMETRIZATIONS, LEGACY)

register_transform(
    "wn_g3", lambda a: np.ascontiguousarray(a.reshape(-1)), lambda a: np.ascontiguousarray(a.reshape(-1, 1, 1))
)
register_transform(
    "wn_g4", lambda a: np.ascontiguousarray(a.reshape(-1)), lambda a: np.ascontiguousarray(a.reshape(-1, 1, 1, 1))
)
# torch Conv2d weight [out, in/groups, kh, kw] <-> ours [kh, kw, in/groups, out]
register_transform(
    "conv2d",
    lambda a: np.ascontiguousarray(a.transpose(2, 3, 1, 0)),
    lambda a: np.ascontiguousarray(a.transpose(3, 2, 0, 1)),
)

_KINDS = {
    "conv1d": ("conv1d", "wn_g3"),
    "conv_transpose1d": ("conv_transpose1d", "wn_g3"),
    "conv2d": ("conv2d", "wn_g4"),
}


def _gv_keys(torch: str, style: str) -> tuple[str, str]:
    if style == PARAMETRIZATIONS:
        return f"{torch}.parametrizations.weight.original0", f"{torch}.parametrizations.weight.original1"
    if style == LEGACY:
        return f"{torch}.weight_g", f"{torch}.weight_v"
    raise ValueError(f"unknown weight-norm key style {style!r} (expected one of {STYLES})")


def wn_rules(ours: str, torch: str, kind: str = "conv1d", *, style: str | None = None, bias: bool = True) -> list[Rule]:
    """Rules for one weight-normed conv; ``style`` None gives both styles (parametrizations first, for writing)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown weight-normed layer kind {kind!r} (expected one of {sorted(_KINDS)})")
    v_transform, g_transform = _KINDS[kind]
    rules = []
    for s in (style,) if style else STYLES:
        g_key, v_key = _gv_keys(torch, s)
        rules += [Rule(f"{ours}.g", g_key, g_transform), Rule(f"{ours}.layer.kernel", v_key, v_transform)]
    if bias:
        rules.append(Rule(f"{ours}.layer.bias", f"{torch}.bias"))
    return rules


def conv_rules(ours: str, torch: str, kind: str = "conv1d", *, bias: bool = True) -> list[Rule]:
    """Rules for a plain (not weight-normed) conv."""
    rules = [Rule(f"{ours}.kernel", f"{torch}.weight", _KINDS[kind][0])]
    return [*rules, Rule(f"{ours}.bias", f"{torch}.bias")] if bias else rules
