"""Parameter names of GPT-SoVITS's SoVITS ``SynthesizerTrn`` <-> ours, derived per parameter from our paths.

Our weight-normed layers hold ``g`` and ``layer.kernel`` (= v); torch's old-style weight norm stores
``weight_g`` [n, 1, 1] and ``weight_v``. Flow couplings alternate with parameter-free Flip modules in torch,
so our ``flow.flows.{i}`` is torch's ``flow.flows.{2i}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

from sovits2_jax.convert.mapping import Rule, register_transform

register_transform(
    "wn_g", lambda a: np.ascontiguousarray(a.reshape(-1)), lambda a: np.ascontiguousarray(a.reshape(-1, 1, 1))
)

_LINEAR_PREFIXES = ("ref_enc.spectral.", "ref_enc.slf_attn.", "ref_enc.fc.", "enc_p.text_embedding.fc")
_WORD = [
    (re.compile(r"^flow\.flows\.(\d+)\."), lambda m: f"flow.flows.{2 * int(m.group(1))}."),
    (re.compile(r"^ref_enc\.spectral\.(\d+)\."), lambda m: f"ref_enc.spectral.{3 * int(m.group(1))}.fc."),
    (re.compile(r"^ref_enc\.temporal\.(\d+)\.conv\."), lambda m: f"ref_enc.temporal.{m.group(1)}.conv1.conv."),
    (re.compile(r"^ref_enc\.fc\."), lambda m: "ref_enc.fc.fc."),
    (re.compile(r"^quantizer\.layers\.(\d+)\.embed$"), lambda m: f"quantizer.vq.layers.{m.group(1)}._codebook.embed"),
]


def torch_name(path: str) -> tuple[str, str]:
    """(torch key, transform name) for one of our dotted parameter paths."""
    key = path
    for pat, rep in _WORD:
        key = pat.sub(rep, key)
    ndim_hint = ""
    if key.endswith(".layer.kernel"):
        key = key[: -len(".layer.kernel")] + ".weight_v"
        ndim_hint = "wn_v"
    elif key.endswith(".layer.bias"):
        key = key[: -len(".layer.bias")] + ".bias"
    elif key.endswith(".g"):
        key = key[:-2] + ".weight_g"
        return key, "wn_g"
    elif key.endswith(".kernel"):
        key = key[: -len(".kernel")] + ".weight"
        ndim_hint = "w"
    elif key.endswith(".embedding"):
        key = key[: -len(".embedding")] + ".weight"
    elif re.search(r"norm_layers_\d\.\d+\.scale$", key):
        key = key[: -len(".scale")] + ".gamma"
    elif re.search(r"norm_layers_\d\.\d+\.bias$", key):
        key = key[: -len(".bias")] + ".beta"
    if not ndim_hint:
        return key, "identity"
    if path.startswith(_LINEAR_PREFIXES):
        return key, "linear"
    if re.match(r"^dec\.ups\.\d+\.", path):
        return key, "conv_transpose1d"
    return key, "conv1d"


def rules_for(paths: Iterable[str]) -> list[Rule]:
    """Exact one-to-one rules for every path of ours."""
    out = []
    for p in paths:
        key, transform = torch_name(p)
        out.append(Rule(p, key, transform))
    return out


_PARAMETRIZED = re.compile(r"^(.*)\.parametrizations\.weight\.original([01])$")


def normalize_weight_norm_keys(items: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    """Renames torch>=2.1 parametrized weight-norm keys (original0 = g, original1 = v) to weight_g / weight_v."""
    for key, value in items:
        m = _PARAMETRIZED.match(key)
        if m:
            key = f"{m.group(1)}.weight_{'g' if m.group(2) == '0' else 'v'}"
        yield key, value


def uses_parametrized_keys(keys: Iterable[str]) -> bool:
    return any(_PARAMETRIZED.match(k) for k in keys)


def to_parametrized_keys(items: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    for key, value in items:
        if key.endswith(".weight_g"):
            key = key[: -len(".weight_g")] + ".parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len(".weight_v")] + ".parametrizations.weight.original1"
        yield key, value
