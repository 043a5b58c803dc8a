"""Orbax parameter checkpoints that carry their model config (``meta.json``), written atomically.

A checkpoint directory holds ``params/`` (Orbax), ``meta.json`` and, for a model with non-gradient state (the
``ssl_grvq`` VITS's codebooks), ``buffers/`` (Orbax, laid out like ``params``: a trainer step's holds every player's,
``{player: tree}``, and its meta.json names the exported one). Paths are ``etils.epath`` paths, so a ``gs://`` one
works too (sovits2_jax/paths.py; there the final rename is a copy, so not atomic)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Mapping

import numpy as np
from etils import epath

from sovits2_jax import paths
from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten

META = "meta.json"
PARAMS = "params"
BUFFERS = "buffers"  # the item of non-gradient state (a trainer's Family.init_buffers), beside params
PLAYER = "player"  # meta.json key: the trainer player whose params are the model
META_ITEM = "meta"  # a trainer step keeps meta.json in this Orbax item
CHECKPOINTS = "checkpoints"  # a trainer workdir's CheckpointManager directory
COMMITTED = "commit_success.txt"  # on GCS Orbax writes a step in place and finishes it with this file


def _stringify(tree: Mapping) -> dict:
    return {str(k): _stringify(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def staging_dir(dst: str | os.PathLike) -> epath.Path:
    """A fresh sibling directory to build ``dst`` in before ``commit`` renames it into place."""
    dst = epath.Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def commit(tmp: epath.Path, dst: str | os.PathLike, overwrite: bool = True) -> None:
    """Moves a finished staging directory to ``dst`` (replacing an existing one when ``overwrite``)."""
    dst = epath.Path(dst)
    if dst.exists():
        if not overwrite:
            raise FileExistsError(f"{dst} exists")
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        dst.rename(old)
        tmp.rename(dst)
        paths.rmtree(old)
    else:
        tmp.rename(dst)


def write_checkpoint(
    directory: str | os.PathLike, params: Mapping, meta: Mapping, buffers: Mapping | None = None
) -> None:
    """Writes params (nested dict of arrays) with Orbax and meta.json into an existing, empty ``directory``;
    ``buffers`` (non-empty) as the ``buffers`` item."""
    import orbax.checkpoint as ocp

    directory = paths.absolute(directory)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS, _stringify(params))
        if buffers:
            ckptr.save(directory / BUFFERS, _stringify(buffers))
        ckptr.wait_until_finished()
    (directory / META).write_text(json.dumps(dict(meta), indent=2, default=str))


def save_checkpoint(
    dst: str | os.PathLike, params: Mapping, meta: Mapping, overwrite: bool = True, buffers: Mapping | None = None
) -> epath.Path:
    """Atomically writes an Orbax params checkpoint + meta.json (+ buffers) at ``dst`` (nothing half-written on
    failure)."""
    tmp = staging_dir(dst)
    try:
        write_checkpoint(tmp, params, meta, buffers)
        commit(tmp, dst, overwrite)
    finally:
        paths.rmtree(tmp)
    return epath.Path(dst)


def meta_path(directory: str | os.PathLike) -> epath.Path | None:
    """``directory/meta.json``, or a trainer step's ``directory/meta/meta.json`` (an Orbax item); None if neither."""
    for path in (epath.Path(directory) / META, epath.Path(directory) / META_ITEM / META):
        if path.is_file():
            return path
    return None


def read_meta(directory: str | os.PathLike) -> dict:
    path = meta_path(directory)
    if path is None:
        raise ConversionError(f"{directory}: not a sovits2-jax checkpoint (no {META})")
    return json.loads(path.read_text())


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict]:
    """(nested params of numpy arrays with int keys for layer lists, meta).

    A trainer checkpoint's params item holds every player (``{"generator": ..., "discriminator": ...}``); its
    meta.json names the exported one as ``"player"``, and only that player's params are returned.
    """
    directory = paths.absolute(directory)
    meta = read_meta(directory)
    if not (directory / PARAMS).is_dir():
        raise ConversionError(f"{directory}: has {META} but no {PARAMS}/ item")
    return _load_item(directory, PARAMS, meta), meta


def load_buffers(directory: str | os.PathLike) -> dict:
    """The checkpoint's buffers (nested numpy; a trainer step's: those of the player meta.json names), ``{}`` when
    it has none (most models)."""
    directory = paths.absolute(directory)
    meta = read_meta(directory)
    if not (directory / BUFFERS).is_dir():
        return {}
    player = meta.get(PLAYER)
    if player is not None:  # a trainer step: players without buffers have no entry
        import orbax.checkpoint as ocp

        with _quiet_item_reads(), ocp.StandardCheckpointer() as ckptr:
            metadata = ckptr.metadata(directory / BUFFERS)
        if player not in getattr(metadata, "item_metadata", metadata):
            return {}
    return _load_item(directory, BUFFERS, meta)


class _NoStepMetadataNotice(logging.Filter):
    """Drops Orbax's notice that an item directory has no ``_CHECKPOINT_METADATA``: a trainer step keeps that file
    one level up (beside its items), and reading one item on its own is how its params are read."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Metadata file does not exist" not in record.getMessage()


@contextlib.contextmanager
def _quiet_item_reads():
    notice = _NoStepMetadataNotice()
    logger = logging.getLogger("absl")
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _load_item(directory: epath.Path, item: str, meta: dict) -> dict:
    with _quiet_item_reads():
        return _read_item(directory, item, meta)


def _read_item(directory: epath.Path, item: str, meta: dict) -> dict:
    import orbax.checkpoint as ocp

    player = meta.get(PLAYER)
    with ocp.StandardCheckpointer() as ckptr:
        metadata = ckptr.metadata(directory / item)
        tree = getattr(metadata, "item_metadata", metadata)
        if player is None:
            restored = ckptr.restore(directory / item, _numpy_target(tree))
        elif player not in tree:
            raise ConversionError(f"{directory}: meta.json names player {player!r}, {item} hold {sorted(tree)}")
    if player is not None:
        restored = _restore_player(directory / item, tree, player)
    flat = {k: np.asarray(v) for k, v in flatten(restored).items()}
    return unflatten(flat)


def _restore_player(path: epath.Path, tree, player: str) -> dict:
    """Only ``tree[player]`` as numpy (a trainer's other players, e.g. a GAN discriminator, stay on disk)."""
    import jax
    import orbax.checkpoint as ocp

    sub = {player: tree[player]}
    is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), sub, is_leaf=is_leaf)
    with ocp.PyTreeCheckpointer() as ckptr:
        args = ocp.args.PyTreeRestore(item=sub, restore_args=restore_args, partial_restore=True)
        return ckptr.restore(path, args=args)[player]


def step_dirs(checkpoints: str | os.PathLike) -> list[epath.Path]:
    """The finished step directories (named by their integer step) under a CheckpointManager directory, by step."""
    checkpoints = epath.Path(checkpoints)
    if not checkpoints.is_dir():
        return []
    dirs = [d for d in checkpoints.iterdir() if d.is_dir() and d.name.isdigit() and meta_path(d)]
    if paths.is_remote(checkpoints):  # an unfinished step there already has its final name
        dirs = [d for d in dirs if (d / COMMITTED).exists()]
    return sorted(dirs, key=lambda d: int(d.name))


def resolve_checkpoint_dir(src: str | os.PathLike) -> epath.Path:
    """A trainer workdir or its ``checkpoints/`` folder -> its latest step directory; any other path unchanged."""
    src = epath.Path(src)
    for candidate in (src / CHECKPOINTS, src):
        if candidate.is_dir() and meta_path(candidate) is None:
            steps = step_dirs(candidate)
            if steps:
                return steps[-1]
    return src


def _numpy_target(tree):
    import jax

    def leaf(m):
        return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=None)

    return jax.tree.map(leaf, dict(tree), is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
