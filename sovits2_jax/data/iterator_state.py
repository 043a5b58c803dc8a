"""Saving and restoring the Grain iterator's position with Orbax (grain's own checkpoint handler).

Inside a training checkpoint, pass ``orbax_save_args(it)`` / ``orbax_restore_args(it)`` under a ``data`` item of
``ocp.args.Composite`` (one JSON file per process). ``save`` / ``restore`` do the same for a standalone directory.
"""

from __future__ import annotations

import os

import grain


def _grain_iterator(it):
    return getattr(it, "iterator", it)


def orbax_save_args(it):
    return grain.checkpoint.CheckpointSave(_grain_iterator(it))


def orbax_restore_args(it):
    return grain.checkpoint.CheckpointRestore(_grain_iterator(it))


def save(directory: str | os.PathLike, it) -> None:
    """Writes the iterator state under ``directory`` (created; an existing one is replaced atomically)."""
    import orbax.checkpoint as ocp

    with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as ckptr:
        ckptr.save(os.path.abspath(directory), args=orbax_save_args(it), force=True)


def restore(directory: str | os.PathLike, it):
    """Moves ``it`` (a fresh iterator of the same pipeline) to the saved position and returns it."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no iterator state at {path!r}")
    with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as ckptr:
        ckptr.restore(path, args=orbax_restore_args(it))
    return it
