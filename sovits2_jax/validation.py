"""Config files and the error every section validator raises (a leaf: imports nothing from the package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class UserError(Exception):
    """A bad input the user can fix: entry points print it as one ``error: ...`` line and exit 1."""


class ConfigError(UserError, ValueError):
    """An inconsistent config value; the message names the key."""


def check(cond: bool, message: str) -> None:
    """Raises ConfigError(message) unless cond holds."""
    if not cond:
        raise ConfigError(message)


def load_config(spec: str):
    """``path/to/file.py[:arg]`` -> the file's ``get_config(arg)`` (what absl's config_flags does, for scripts)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or not Path(path).is_file():
        raise ConfigError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()

