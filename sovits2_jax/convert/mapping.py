"""Declarative parameter-name tables used in both directions (ours <-> torch), with named tensor transforms.

A ``Rule`` pairs a dotted path of ours with a torch key; ``{i}``, ``{j}``, ``{k}`` stand for integer indices
that must agree on both sides. Conversion is strict: every missing, unexpected and mis-shaped key is reported
by name in a single ``ConversionError``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

PLACEHOLDERS = ("i", "j", "k")


class ConversionError(ValueError):
    """A checkpoint does not match the model: lists every problem by key."""


@dataclasses.dataclass(frozen=True)
class Rule:
    ours: str
    torch: str
    transform: str = "identity"


@dataclasses.dataclass(frozen=True)
class Transform:
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


TRANSFORMS: dict[str, Transform] = {}


def register_transform(name: str, to_ours, to_torch) -> None:
    """Adds a named transform (a pair of inverse functions) usable in rule tables."""
    TRANSFORMS[name] = Transform(to_ours, to_torch)


register_transform("identity", lambda a: a, lambda a: a)
register_transform("linear", lambda a: np.ascontiguousarray(a.T), lambda a: np.ascontiguousarray(a.T))
# torch Conv1d weight [out, in/groups, k] <-> ours [k, in/groups, out]
register_transform(
    "conv1d",
    lambda a: np.ascontiguousarray(a.transpose(2, 1, 0)),
    lambda a: np.ascontiguousarray(a.transpose(2, 1, 0)),
)
# torch ConvTranspose1d weight [in, out/groups, k] <-> ours [k, in, out/groups]
register_transform(
    "conv_transpose1d",
    lambda a: np.ascontiguousarray(a.transpose(2, 0, 1)),
    lambda a: np.ascontiguousarray(a.transpose(1, 2, 0)),
)


def _compile(pattern: str) -> re.Pattern:
    out = re.escape(pattern)
    for name in PLACEHOLDERS:
        token = re.escape("{" + name + "}")
        out = out.replace(token, rf"(?P<{name}>\d+)", 1).replace(token, rf"(?P={name})")
    return re.compile(out + r"\Z")


@dataclasses.dataclass(frozen=True)
class _Compiled:
    rule: Rule
    ours: re.Pattern
    torch: re.Pattern


def _compile_rules(rules: Sequence[Rule]) -> list[_Compiled]:
    for r in rules:
        if r.transform not in TRANSFORMS:
            raise KeyError(f"rule {r.ours} <-> {r.torch}: unknown transform {r.transform!r}")
    return [_Compiled(r, _compile(r.ours), _compile(r.torch)) for r in rules]


def _format(pattern: str, groups: Mapping[str, str]) -> str:
    return pattern.format(**{k: groups.get(k, "{" + k + "}") for k in PLACEHOLDERS})


def _raise(problems: dict[str, list[str]], source: str) -> None:
    lines = [f"checkpoint {source} does not match the model:"]
    for kind, keys in problems.items():
        if keys:
            lines.append(f"  {kind} ({len(keys)}): " + ", ".join(keys))
    raise ConversionError("\n".join(lines))


def torch_to_ours(
    items: Iterable[tuple[str, np.ndarray]],
    rules: Sequence[Rule],
    expected_shapes: Mapping[str, tuple[int, ...]],
    *,
    ignore: Sequence[str] = (),
    source: str = "<torch>",
) -> dict[str, np.ndarray]:
    """Maps torch (key, tensor) pairs to our flat dotted paths; strict about names and shapes."""
    compiled = _compile_rules(rules)
    ignored = [re.compile(p) for p in ignore]
    out: dict[str, np.ndarray] = {}
    unexpected, misshaped = [], []
    for key, value in items:
        if any(p.search(key) for p in ignored):
            continue
        for c in compiled:
            m = c.torch.match(key)
            if m:
                ours = _format(c.rule.ours, m.groupdict())
                value = TRANSFORMS[c.rule.transform].to_ours(np.asarray(value))
                break
        else:
            unexpected.append(key)
            continue
        if ours not in expected_shapes:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(expected_shapes[ours]):
            misshaped.append(f"{key} {tuple(value.shape)} != {tuple(expected_shapes[ours])} ({ours})")
        else:
            out[ours] = value
    missing = [k for k in expected_shapes if k not in out and not any(k in m for m in misshaped)]
    missing = [ours_to_torch_key(k, rules) or k for k in missing]
    if missing or unexpected or misshaped:
        _raise({"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped}, source)
    return out


def ours_to_torch_key(path: str, rules: Sequence[Rule]) -> str | None:
    for c in _compile_rules(rules):
        m = c.ours.match(path)
        if m:
            return _format(c.rule.torch, m.groupdict())
    return None


def ours_to_torch(flat: Mapping[str, np.ndarray], rules: Sequence[Rule]) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (torch key, tensor) for each of our flat parameters; a path without a rule is an error."""
    compiled = _compile_rules(rules)
    unmatched = []
    pairs = []
    for path in flat:
        for c in compiled:
            m = c.ours.match(path)
            if m:
                pairs.append((path, c, m.groupdict()))
                break
        else:
            unmatched.append(path)
    if unmatched:
        raise ConversionError("parameters without a torch name: " + ", ".join(unmatched))
    for path, c, groups in pairs:
        yield _format(c.rule.torch, groups), TRANSFORMS[c.rule.transform].to_torch(np.asarray(flat[path]))


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict (int or str keys, as ``nnx.to_pure_dict``) -> {dotted path: leaf}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, object]) -> dict:
    """{dotted path: leaf} -> nested dict; integer-looking parts become int keys (as ``nnx.to_pure_dict``)."""
    root: dict = {}
    for path, value in flat.items():
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return root


def stack_layers(flat: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``{prefix}.{i}.rest`` -> ``{prefix}.rest`` stacked over i (for scan-over-layers models)."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.(.+)\Z")
    groups: dict[str, dict[int, np.ndarray]] = {}
    out = {}
    for path, v in flat.items():
        m = pat.match(path)
        if m:
            groups.setdefault(m.group(2), {})[int(m.group(1))] = v
        else:
            out[path] = v
    for rest, by_index in groups.items():
        out[f"{prefix}.{rest}"] = np.stack([by_index[i] for i in sorted(by_index)])
    return out


def unstack_layers(flat: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Inverse of ``stack_layers``."""
    out = {}
    for path, v in flat.items():
        if path.startswith(prefix + "."):
            rest = path[len(prefix) + 1 :]
            for i in range(v.shape[0]):
                out[f"{prefix}.{i}.{rest}"] = np.asarray(v[i])
        else:
            out[path] = v
    return out


def expected_shapes(make_model: Callable) -> dict[str, tuple[int, ...]]:
    """Flat dotted path -> shape of every parameter of ``make_model()``, without allocating it."""
    from flax import nnx

    from sovits2_jax.parallel.sharding import split_params

    _, params = split_params(nnx.eval_shape(make_model))
    return {k: tuple(v.shape) for k, v in flatten(nnx.to_pure_dict(params)).items()}
