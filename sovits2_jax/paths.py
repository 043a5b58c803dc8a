"""Paths that may be remote: a local path or a ``gs://`` URL as one ``etils.epath.Path``.

Orbax writes arrays to a local disk or to GCS (tensorstore's ``gcs`` driver), and epath reads and writes every other
file of a ``gs://`` path through fsspec's ``gcsfs``. Any other ``scheme://`` is a ConfigError, as is ``gs://``
without gcsfs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

from etils import epath

from sovits2_jax.validation import ConfigError

REMOTE = {"gs": "gcsfs"}  # scheme -> the fsspec package epath needs for it


def scheme(path: str | os.PathLike) -> str | None:
    """``gs`` of ``gs://bucket/x``; None for a local path."""
    name, sep, _ = os.fspath(path).partition("://")
    return name if sep and name.isidentifier() else None


def is_remote(path: str | os.PathLike) -> bool:
    return scheme(path) is not None


def absolute(path: str | os.PathLike) -> epath.Path:
    """``path`` as an epath.Path: a local one absolute, a URL as given (epath's ``absolute()`` would prefix it with
    the working directory)."""
    text = os.fspath(path)
    return epath.Path(text if is_remote(text) else os.path.abspath(text))


def resolve(path: str | os.PathLike, what: str) -> epath.Path:
    """``absolute(path)``; a ConfigError naming the setting ``what`` for a scheme that cannot be written or whose
    fsspec package is missing."""
    text = os.fspath(path)
    name = scheme(text)
    if name is None:
        return absolute(text)
    supported = ", ".join(f"{s}://" for s in REMOTE)
    if name not in REMOTE:
        raise ConfigError(
            f"{what}={text}: {name}:// is not supported (Orbax checkpoints go to a local or mounted disk or to "
            f"{supported})"
        )
    package = REMOTE[name]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{what}={text}: {name}:// paths need the {package} package: pip install {package}")
    import fsspec

    # tensorstore writes the checkpoints' objects behind gcsfs's back: its cached directory listings would miss them
    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)
    return absolute(text)


def rmtree(path: epath.Path) -> None:
    """Deletes a directory tree if it can, as ``shutil.rmtree(path, ignore_errors=True)`` (for remote paths too)."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(Exception):  # gcsfs raises HTTP errors besides OSError; a leftover is cleaned up later
        path.rmtree()
