"""Model families of the input pipeline: one module per ``config.data.kind``, each defining ``TASK`` (a
``base.Task`` subclass). A new family is a new module here; the pipeline and the configs find it by name."""

from __future__ import annotations

import importlib
import pkgutil


def kinds() -> tuple[str, ...]:
    """Every family with a module in this package."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.ispkg))


def get(kind: str):
    """The ``Task`` class of ``kind`` (``ValueError`` naming the known kinds otherwise)."""
    if kind not in kinds():
        raise ValueError(f"unknown data pipeline {kind!r}; choose one of {', '.join(kinds())}")
    return importlib.import_module(f"{__name__}.{kind}").TASK
