"""Saving and restoring the Grain iterator's position with Orbax.

Inside a training checkpoint, pass ``orbax_save_args(it)`` / ``orbax_restore_args(it)`` under a ``data`` item of
``ocp.args.Composite`` handled by ``PositionHandler`` (one JSON file per process, as grain's own handler writes).
A step's position does not depend on the process count (every process reads its shards of the same global step,
see ``data.order``), so a checkpoint written by N processes restores on M: when this process's own file is absent
the saved files must agree, and their common state is used. ``save`` / ``restore`` do the same for a standalone
directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint


def _grain_iterator(it):
    return getattr(it, "iterator", it)


class PositionHandler(grain_checkpoint.CheckpointHandler):
    """grain's Orbax handler, restoring from a checkpoint written by another number of processes too."""

    def restore(self, directory, item=None, args=None):
        item = item or args.item
        import jax

        own = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists():
            return super().restore(directory, item=item)
        saved = sorted(directory.glob("process_*-of-*.json"))
        if not saved:
            raise ValueError(f"no data position in {directory}")
        states = {json.dumps(json.loads(f.read_text()), sort_keys=True) for f in saved}
        if len(states) != 1:
            raise ValueError(
                f"{directory}: the {len(saved)} processes that wrote this checkpoint were at different data "
                f"positions, so it restores only on {len(saved)} processes"
            )
        item.set_state(json.loads(states.pop()))
        getattr(item, "start_prefetch", lambda: None)()  # as grain's own restore does
        return item


@ocp.args.register_with_handler(PositionHandler, for_save=True)
@dataclasses.dataclass
class PositionSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(PositionHandler, for_restore=True)
@dataclasses.dataclass
class PositionRestore(ocp.args.CheckpointArgs):
    item: Any


def orbax_save_args(it):
    return PositionSave(_grain_iterator(it))


def orbax_restore_args(it):
    return PositionRestore(_grain_iterator(it))


def save(directory: str | os.PathLike, it) -> None:
    """Writes the iterator state under ``directory`` (created; an existing one is replaced atomically)."""
    with ocp.Checkpointer(PositionHandler()) as ckptr:
        ckptr.save(os.path.abspath(directory), args=orbax_save_args(it), force=True)


def restore(directory: str | os.PathLike, it):
    """Moves ``it`` (a fresh iterator of the same pipeline) to the saved position and returns it."""
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no iterator state at {path!r}")
    with ocp.Checkpointer(PositionHandler()) as ckptr:
        ckptr.restore(path, args=orbax_restore_args(it))
    return it
