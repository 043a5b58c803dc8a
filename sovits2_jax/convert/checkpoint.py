"""Orbax parameter checkpoints that carry their model config (``meta.json``), written atomically."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten

META = "meta.json"
PARAMS = "params"


def _stringify(tree: Mapping) -> dict:
    return {str(k): _stringify(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def staging_dir(dst: str | Path) -> Path:
    """A fresh sibling directory to build ``dst`` in before ``commit`` renames it into place."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def commit(tmp: Path, dst: str | Path, overwrite: bool = True) -> None:
    """Moves a finished staging directory to ``dst`` (replacing an existing one when ``overwrite``)."""
    dst = Path(dst)
    if dst.exists():
        if not overwrite:
            raise FileExistsError(f"{dst} exists")
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dst)


def write_checkpoint(directory: str | Path, params: Mapping, meta: Mapping) -> None:
    """Writes params (nested dict of arrays) with Orbax and meta.json into an existing, empty ``directory``."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    tree = _stringify(params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS, tree)
        ckptr.wait_until_finished()
    (directory / META).write_text(json.dumps(dict(meta), indent=2, default=str))


def save_checkpoint(dst: str | Path, params: Mapping, meta: Mapping, overwrite: bool = True) -> Path:
    """Atomically writes an Orbax params checkpoint + meta.json at ``dst`` (nothing half-written on failure)."""
    tmp = staging_dir(dst)
    try:
        write_checkpoint(tmp, params, meta)
        commit(tmp, dst, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)


def read_meta(directory: str | Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise ConversionError(f"{directory}: not a sovits2-jax checkpoint (no {META})")
    return json.loads(path.read_text())


def load_checkpoint(directory: str | Path) -> tuple[dict, dict]:
    """(nested params of numpy arrays with int keys for layer lists, meta)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    meta = read_meta(directory)
    with ocp.StandardCheckpointer() as ckptr:
        metadata = ckptr.metadata(directory / PARAMS)
        tree = getattr(metadata, "item_metadata", metadata)
        target = _numpy_target(tree)
        restored = ckptr.restore(directory / PARAMS, target)
    flat = {k: np.asarray(v) for k, v in flatten(restored).items()}
    return unflatten(flat), meta


def _numpy_target(tree):
    import jax

    def leaf(m):
        return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=None)

    return jax.tree.map(leaf, dict(tree), is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
