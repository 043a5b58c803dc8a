"""``from_dict`` / ``to_dict`` for the frozen dataclass configs of the models (one implementation for all).

``to_dict`` gives nested dicts and keeps tuples (a ConfigDict section built from it stays overridable from the
command line, which list fields are not); ``from_dict`` rejects unknown keys by name and restores nested configs and
tuples (also from JSON's lists) from the field annotations.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

from sovits2_jax.validation import ConfigError


def _as_dict(d: Any) -> dict[str, Any]:
    if hasattr(d, "to_dict") and not isinstance(d, Mapping):  # an ml_collections ConfigDict
        d = d.to_dict()
    if not isinstance(d, Mapping):
        raise ConfigError(f"expected a mapping of config keys, got {type(d).__name__}")
    return dict(d)


def _restore(tp: Any, value: Any) -> Any:
    """``value`` as the annotated type: nested configs from dicts, tuples from lists, numpy scalars as numbers."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _restore(args[0], value) if len(args) == 1 else value
    if isinstance(tp, type) and issubclass(tp, ConfigBase):
        return value if isinstance(value, tp) else tp.from_dict(value)
    if origin is tuple and isinstance(value, (tuple, list)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_restore(args[0], v) for v in value)
        if len(args) == len(value):
            return tuple(_restore(a, v) for a, v in zip(args, value))
        return tuple(value)
    if tp is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if tp is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


class ConfigBase:
    """Mixin for ``@dataclasses.dataclass`` configs; ``config_name`` (default: the class name) names the config in
    the unknown-key error."""

    config_name: typing.ClassVar[str | None] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """The config from ``to_dict``'s output, a ConfigDict or a JSON-loaded dict; unknown keys are an error."""
        d = _as_dict(d)
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown {cls.config_name or cls.__name__} keys: {unknown}")
        return cls(**{k: _restore(hints[k], v) for k, v in d.items()})

    @classmethod
    def from_section(cls, section: Any, where: str):
        """``from_dict`` of a config-file section: any inconsistency is a ConfigError starting with ``where``."""
        try:
            return cls.from_dict(section)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Nested configs as dicts, tuples kept."""
        return dataclasses.asdict(self)
