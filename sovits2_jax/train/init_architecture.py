"""``init.path`` decides the architecture: the part a family starts from (``Family.init_part``) is read from the
checkpoint (a CosyVoice2 model directory's yaml, an Orbax checkpoint's meta.json, an HF config.json, a ``.pth``'s
config) and its architecture replaces ``config.model``'s, so a fine-tune needs no preset matching the release.
Runtime choices (dtype, remat, layer scanning, attention implementation) stay the config's. A command-line
override of an architecture key that contradicts the checkpoint is refused, naming the key."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sovits2_jax.convert.cosyvoice2_yaml import RUNTIME_FIELDS
from sovits2_jax.convert.mapping import ConversionError, flatten
from sovits2_jax.train import family as family_lib
from sovits2_jax.validation import ConfigError

log = logging.getLogger(__name__)


def _get(config, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def _set(config, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    _get(config, ".".join(parents))[leaf] = value


def _same(a, b) -> bool:
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
    return norm(a) == norm(b)


def _implied(leaves: Mapping[str, Any], head_dim_key: str) -> bool:
    """Whether the checkpoint's head_dim is the one a config's 0 / None means (hidden_size // num_heads)."""
    section = head_dim_key.rsplit(".", 1)[0] + "." if "." in head_dim_key else ""
    hidden, heads = leaves.get(section + "hidden_size"), leaves.get(section + "num_heads")
    return bool(hidden and heads) and leaves[head_dim_key] == hidden // heads


def adopt(config, overrides: Mapping[str, Any] = ()) -> list[str]:
    """Sets ``config.model``'s architecture to that of ``config.init.path``'s part (in place); returns the
    ``"key: ours -> theirs"`` changes. ``overrides``: the dotted keys given on the command line."""
    path = config.get("init", {}).get("path") if "init" in config else None
    if not path or "model" not in config or "family" not in config:
        return []
    part = family_lib.get(config.family).init_part
    if not part:
        return []
    from sovits2_jax.convert import parts

    try:
        theirs, scope = parts.load_config(path, part)
    except ConversionError as e:
        raise ConfigError(f"config.init.path: {e}") from None
    leaves = flatten(theirs.to_dict())
    prefix = f"model.{scope}." if scope else "model."
    if scope:
        leaves = {k[len(scope) + 1 :]: v for k, v in leaves.items() if k.startswith(scope + ".")}
    changed = []
    for key, value in sorted(leaves.items()):
        if RUNTIME_FIELDS.intersection(key.split(".")):
            continue
        dotted = prefix + key
        try:
            current = _get(config, dotted)
        except (KeyError, AttributeError):
            continue  # a field the config leaves to the model's default
        if _same(current, value) or (key.rsplit(".", 1)[-1] == "head_dim" and not current and _implied(leaves, key)):
            continue
        if dotted in overrides:
            raise ConfigError(f"--config.{dotted}={current!r} contradicts config.init.path={path}: its {part} has "
                              f"{key}={value!r} (the checkpoint decides the architecture)")  # fmt: skip
        _set(config, dotted, tuple(value) if isinstance(current, tuple) else value)
        changed.append(f"{dotted}: {current!r} -> {value!r}")
    if changed:
        log.info("init.path %s: the %s architecture is the checkpoint's (%s)", path, part, "; ".join(changed))
    return changed
