"""The trainer's Orbax CheckpointManager: params, optimizer state, counters, the Grain position and meta.json.

``WORKDIR/checkpoints/<step>/`` holds the items ``params`` and ``opt_state`` (``{player: tree}``), ``buffers``
(``{player: tree}``, the family's non-gradient state; only for families that have some), ``train_state`` (JSON
counters), ``data`` (the Grain iterator state) and ``meta`` (``meta/meta.json``: the export metadata that makes the
step a ``convert/jax_to_torch.py --src``). Saves are asynchronous; Orbax finalises a step by renaming its
temporary directory, so a process killed mid-save leaves the previous steps as the latest complete one. Restoring
takes the arrays' shardings from the target, so a checkpoint restores onto any mesh.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import orbax.checkpoint as ocp

from sovits2_jax.data import iterator_state
from sovits2_jax.validation import ConfigError, local_path

ITEMS = ("params", "opt_state", "buffers", "train_state", "data", "meta")
BUFFERS = "buffers"
META_FILE = "meta.json"
EVAL_METRIC = "eval_loss"


def _handlers() -> dict:
    return dict(
        params=ocp.StandardCheckpointHandler(),
        opt_state=ocp.StandardCheckpointHandler(),
        buffers=ocp.StandardCheckpointHandler(),
        train_state=ocp.JsonCheckpointHandler(),
        data=iterator_state.PositionHandler(),
        meta=ocp.JsonCheckpointHandler(filename=META_FILE),
    )


def _preservation(keep_last: int, keep_best: int):
    cm = ocp.checkpoint_managers
    policies = [cm.LatestN(n=max(1, keep_last))]
    if keep_best > 0:
        # BestN keeps the last n after sorting; reverse=True sorts descending, so the n lowest losses remain
        best = cm.BestN(get_metric_fn=lambda m: m[EVAL_METRIC], reverse=True, n=keep_best,
                        keep_checkpoints_without_metrics=False)  # fmt: skip
        policies.append(best)
    return cm.AnyPreservationPolicy(policies)


def _abstract(tree):
    """ShapeDtypeStructs (with the arrays' shardings) to restore into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _remove_unfinished(directory: str) -> None:
    """Deletes the temporary directories of saves killed half-way (process 0 only, then every process waits):
    a relaunched multi-process job otherwise writes into a stale step-tmp directory of the dead run."""
    if jax.process_index() == 0 and os.path.isdir(directory):
        for name in os.listdir(directory):
            if ".orbax-checkpoint-tmp" in name:
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sovits2_jax checkpoint cleanup")


class Checkpoints:
    """Saves and restores training state under ``WORKDIR/checkpoints`` (only complete steps are seen)."""

    def __init__(self, workdir: str, *, keep_last: int = 3, keep_best: int = 0, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(local_path(workdir, "workdir")), "checkpoints")
        _remove_unfinished(self.directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=_preservation(keep_last, keep_best),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=False,  # done by _remove_unfinished, once, before any process starts saving
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def train_state(self, step: int) -> dict:
        """The JSON counters of a step (read alone, without restoring arrays)."""
        path = os.path.join(self.directory, str(step), "train_state", "metadata")
        with open(path) as f:
            return json.load(f)

    def check_family(self, family: str) -> None:
        """Raises a ConfigError when the workdir's checkpoints belong to another family."""
        step = self.latest_step()
        if step is None:
            return
        theirs = self.train_state(step).get("family")
        if theirs != family:
            raise ConfigError(
                f"workdir checkpoints {self.directory} hold family {theirs!r} (step {step}), this run is "
                f"config.family={family!r}: use another --workdir"
            )

    def save(
        self, step: int, params, opt_state, counters: dict, batches, meta: dict, eval_loss=None, buffers=None
    ) -> None:
        """Starts an asynchronous save of ``step`` (``wait`` blocks until it is on disk); ``buffers`` (non-empty)
        become the ``buffers`` item."""
        items = dict(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            train_state=ocp.args.JsonSave(counters),
            data=iterator_state.orbax_save_args(batches),
            meta=ocp.args.JsonSave(meta),
        )
        if buffers:
            items[BUFFERS] = ocp.args.StandardSave(buffers)
        args = ocp.args.Composite(**items)
        metrics = None if eval_loss is None else {EVAL_METRIC: float(eval_loss)}
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, params, opt_state, batches, buffers=None) -> tuple:
        """(params, opt_state, counters, buffers) of ``step`` laid out like the given ``params`` / ``opt_state`` /
        ``buffers`` (their shardings: the new mesh); ``batches`` is moved to the saved data position. Buffers are
        restored when ``buffers`` is non-empty (``{}`` otherwise)."""
        items = dict(
            params=ocp.args.StandardRestore(_abstract(params)),
            opt_state=ocp.args.StandardRestore(_abstract(opt_state)),
            train_state=ocp.args.JsonRestore(),
            data=iterator_state.orbax_restore_args(batches),
        )
        if buffers:
            if not os.path.isdir(os.path.join(self.directory, str(step), BUFFERS)):
                raise ConfigError(
                    f"checkpoint {self.directory}/{step} has no {BUFFERS} item, which this family carries (saved by "
                    "another kind of model?)"
                )
            items[BUFFERS] = ocp.args.StandardRestore(_abstract(buffers))
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["params"], out["opt_state"], out["train_state"], (out[BUFFERS] if buffers else {})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
