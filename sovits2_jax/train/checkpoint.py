"""The trainer's Orbax CheckpointManager: params, optimizer state, counters, the Grain position and meta.json.

``WORKDIR/checkpoints/<step>/`` holds the items ``params`` and ``opt_state`` (``{player: tree}``), ``buffers``
(``{player: tree}``, the family's non-gradient state; only for families that have some), ``train_state`` (JSON
counters), ``data`` (the Grain iterator state) and ``meta`` (``meta/meta.json``: the export metadata that makes the
step a ``convert/jax_to_torch.py --src``). Saves are asynchronous; Orbax finalises a step by renaming its
temporary directory, so a process killed mid-save leaves the previous steps as the latest complete one. A save
that fails (a full disk, a file size limit, a lost mount) is a ``SaveError`` at the next step or wait: one line
naming the step, the path, the cause and the last complete checkpoint; its temporary directory is removed. Restoring
takes the arrays' shardings from the target, so a checkpoint restores onto any mesh.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings

import jax
import orbax.checkpoint as ocp

from sovits2_jax import paths
from sovits2_jax.convert.checkpoint import COMMITTED
from sovits2_jax.data import iterator_state
from sovits2_jax.validation import ConfigError, UserError

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


def _unfinished(directory) -> list:
    """The directories of saves that did not finish: ``<step>.orbax-checkpoint-tmp-*`` on a disk; on GCS, where
    Orbax writes in place (no renames), a step directory without its commit_success.txt."""
    if not directory.is_dir():
        return []
    if not paths.is_remote(directory):
        return [d for d in directory.iterdir() if ".orbax-checkpoint-tmp" in d.name]
    return [d for d in directory.iterdir() if d.name.isdigit() and not (d / COMMITTED).exists()]


def _remove_unfinished(directory) -> None:
    """Deletes the temporary directories of saves killed half-way (process 0 only, then every process waits):
    a relaunched multi-process job otherwise writes into a stale step-tmp directory of the dead run."""
    if jax.process_index() == 0:
        for d in _unfinished(directory):
            paths.rmtree(d)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sovits2_jax checkpoint cleanup")


class SaveError(UserError):
    """A checkpoint could not be written; training stops (the previous checkpoints are intact)."""


# Orbax's own reports of a failed save (a traceback per write thread, then per stage): the SaveError says it once
_SAVE_FAILURE_REPORTS = ("_SignalingThread.run() raised", "in background save thread", "Save Finalize thread",
                         "Checkpointer failed")  # fmt: skip


class _SaveFailureReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" not in record.pathname or record.levelno < logging.ERROR:
            return True
        return not any(text in record.getMessage() for text in _SAVE_FAILURE_REPORTS)


def _cause(error: BaseException) -> str:
    """The innermost line of an error that says what failed (tensorstore puts the OS error last)."""
    text = " ".join(str(error).split()) or type(error).__name__
    for marker in ("Failed to write", "No space left", "Permission denied", "Read-only"):
        if marker in text:
            return text[text.index(marker) :].split(" [tensorstore_spec=")[0]
    return text if len(text) < 300 else text[:297] + "..."


class Checkpoints:
    """Saves and restores training state under ``WORKDIR/checkpoints`` (only complete steps are seen)."""

    def __init__(self, workdir, *, keep_last: int = 3, keep_best: int = 0, async_save: bool = True):
        self.directory = paths.resolve(workdir, "workdir") / "checkpoints"
        _remove_unfinished(self.directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=_preservation(keep_last, keep_best),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=False,  # done by _remove_unfinished, once, before any process starts saving
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())
        self._saving: int | None = None  # the step of the save in flight
        self._failed = False
        if not any(isinstance(f, _SaveFailureReports) for f in logging.getLogger("absl").filters):
            logging.getLogger("absl").addFilter(_SaveFailureReports())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def train_state(self, step: int) -> dict:
        """The JSON counters of a step (read alone, without restoring arrays)."""
        return json.loads((self.directory / str(step) / "train_state" / "metadata").read_text())

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

    def _failure(self, step: int | None, error: BaseException) -> SaveError:
        """The SaveError of a failed save of ``step``; its temporary directory removed."""
        self._failed = True
        # the failed save's writers report it again as they unwind (asyncio's never-retrieved futures, thread
        # exits, coroutines left unawaited): said once, here
        sys.unraisablehook = lambda _: None
        threading.excepthook = lambda _: None
        logging.getLogger("asyncio").disabled = True
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
        last = self.latest_step()
        if jax.process_index() == 0:
            for d in _unfinished(self.directory):  # the failed steps' temporary directories
                if int(d.name.split(".")[0]) > (last or -1):
                    paths.rmtree(d)
        where = f"{self.directory}/{step}" if step is not None else self.directory
        kept = f"the last complete checkpoint is step {last} ({self.directory}/{last})" if last is not None else (
            "no complete checkpoint exists")  # fmt: skip
        return SaveError(f"checkpoint: saving step {step} to {where} failed ({_cause(error)}); {kept}")

    def check(self) -> None:
        """Raises a SaveError if the save in flight has failed (a cheap poll, every step)."""
        if self._saving is None:
            return
        try:
            self.manager.check_for_errors()
        except Exception as e:
            raise self._failure(self._saving, e) from None

    def save(
        self, step: int, params, opt_state, counters: dict, batches, meta: dict, eval_loss=None, buffers=None
    ) -> None:
        """Starts an asynchronous save of ``step`` (``wait`` blocks until it is on disk); ``buffers`` (non-empty)
        become the ``buffers`` item. SaveError when this or the previous save failed."""
        self.check()
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
        try:
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:  # Orbax first finishes the save in flight: its failure surfaces here
            raise self._failure(self._saving if self._saving is not None else step, e) from None
        self._saving = step

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
            if not (self.directory / str(step) / BUFFERS).is_dir():
                raise ConfigError(
                    f"checkpoint {self.directory}/{step} has no {BUFFERS} item, which this family carries (saved by "
                    "another kind of model?)"
                )
            items[BUFFERS] = ocp.args.StandardRestore(_abstract(buffers))
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["params"], out["opt_state"], out["train_state"], (out[BUFFERS] if buffers else {})

    def wait(self) -> None:
        """Blocks until the save in flight is on disk; SaveError if it failed."""
        try:
            self.manager.wait_until_finished()
            self.check()
        except SaveError:
            raise
        except Exception as e:
            raise self._failure(self._saving, e) from None
        self._saving = None

    def close(self) -> None:
        try:
            self.manager.close()
        except Exception:
            if not self._failed:  # after a SaveError the same failure would only be reported twice
                raise
