"""The config error every section validator raises (a leaf: imports nothing from the package)."""

from __future__ import annotations


class ConfigError(ValueError):
    """An inconsistent config value; the message names the key."""


def check(cond: bool, message: str) -> None:
    """Raises ConfigError(message) unless cond holds."""
    if not cond:
        raise ConfigError(message)
