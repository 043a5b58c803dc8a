"""Config keys a text encoder directory decides (``config.data.text_source="bge_m3"``), shared by the families that
read its ids and features (the GPT-SoVITS2 AR and VITS2): each family names which of its keys take the encoder's
vocabulary and width; ``adopt`` sets them before validation and ``check`` refuses a config that disagrees."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sovits2_jax.validation import ConfigError

log = logging.getLogger(__name__)

# the family's keys for (vocab, width) -> {dotted config key: value}
KeyMap = Callable[[int, int], dict]


def sizes(config, keys: KeyMap) -> dict | None:
    """{config key: the value the text encoder directory gives it}, or None when the text is BPE."""
    data = config.data
    if data.get("text_source", "bpe") != "bge_m3":
        return None
    if not data.get("text_encoder"):
        raise ConfigError("config.data.text_encoder: give the text encoder directory the bge_m3 columns were made "
                          "with (text_source='bge_m3')")  # fmt: skip
    from sovits2_jax.convert import text_encoder
    from sovits2_jax.convert.mapping import ConversionError

    try:
        vocab, width = text_encoder.sizes(data.text_encoder)
    except (ConversionError, FileNotFoundError, ValueError) as e:
        raise ConfigError(f"config.data.text_encoder={data.text_encoder!r}: {e}") from None
    return keys(vocab, width)


def get(config, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def check(config, keys: KeyMap) -> None:
    """ConfigError naming the first key that differs from what the text encoder gives."""
    for key, value in (sizes(config, keys) or {}).items():
        if get(config, key) != value:
            what = {"vocab_size": "tokenizer gives", "text_input": "features need"}.get(key.rsplit(".", 1)[-1],
                                                                                       "features have width")
            raise ConfigError(
                f"config.{key}={get(config, key)!r} does not match the text encoder "
                f"config.data.text_encoder={config.data.text_encoder!r}: its {what} {value!r}"
            )


def adopt(config, keys: KeyMap, overrides=()) -> list[str]:
    """Sets the keys from ``config.data.text_encoder`` (with ``init.path`` the checkpoint's model keys stay, and
    validation compares them); a contradicting command-line key is a ConfigError naming it."""
    try:
        wanted = sizes(config, keys)
    except ConfigError:
        return []  # validation names the problem
    changed = []
    for key, value in (wanted or {}).items():
        current = get(config, key)
        if current == value or (key.startswith("model.") and config.init.get("path")):
            continue
        if key in overrides:
            raise ConfigError(f"--config.{key}={current!r} contradicts config.data.text_encoder="
                              f"{config.data.text_encoder}: it gives {value}")  # fmt: skip
        *parents, leaf = key.split(".")
        get(config, ".".join(parents))[leaf] = value
        changed.append(f"{key}: {current!r} -> {value!r}")
    if changed:
        log.info("text encoder %s: %s", config.data.text_encoder, "; ".join(changed))
    return changed
