"""Checkpoint averaging (recipe stage 6), as CosyVoice's ``average_model.py``.

    python -m sovits2_jax.train.average --workdir=DIR --num=5 --by=dev_loss|latest --dst=DIR

Chooses ``num`` finished steps of ``DIR/checkpoints``: the lowest dev loss (the ``eval_loss`` each step was
logged for; steps without an eval of their own are left out) or the latest, and writes the element-wise mean of
their exported player's params (and of its buffers, e.g. EMA codebooks, when the family has some: torch's
``average_model.py`` averages a state dict's buffers too) as an Orbax checkpoint of ours with meta.json
(atomically). The result is a
valid ``--config.init.path``, ``convert/jax_to_torch.py --src`` and inference checkpoint. ``--workdir`` and ``--dst``
may be ``gs://`` paths (sovits2_jax/paths.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags
from etils import epath

from sovits2_jax import cli, paths
from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten
from sovits2_jax.train.metrics import read_metrics

BY = ("dev_loss", "latest")
EVAL_LOSS = "eval_loss"
ORBAX_METRICS = "metrics"  # the item (and file) Orbax writes a step's save metrics to when it tracks the best
METRICS_LOG = "metrics.jsonl"


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so importing this module defines none)."""
    flags.DEFINE_string("workdir", None, "trainer workdir (holding checkpoints/)")
    flags.DEFINE_integer("num", 5, "how many checkpoints to average")
    flags.DEFINE_enum("by", "dev_loss", BY, "dev_loss: the lowest eval loss; latest: the last steps")
    flags.DEFINE_string("dst", None, "output checkpoint directory")


def eval_loss(step_dir: epath.Path) -> float | None:
    """The dev loss of a trainer step, None when it was saved without an eval of its own.

    From the step's Orbax ``metrics`` item (written when the trainer keeps best-N), else the ``eval/loss`` that
    ``WORKDIR/metrics.jsonl`` logged at that step (its last record: a resumed run logs a step again).
    """
    step = int(step_dir.name)
    value = None
    orbax_metrics = step_dir / ORBAX_METRICS / ORBAX_METRICS
    if orbax_metrics.is_file():
        value = json.loads(orbax_metrics.read_text()).get(EVAL_LOSS)
    else:
        for record in read_metrics(step_dir.parent.parent / METRICS_LOG):
            if record.get("step") == step and record.get("eval/loss") is not None:
                value = record["eval/loss"]
    return None if value is None or not np.isfinite(value) else float(value)


def choose(workdir: str | os.PathLike, num: int, by: str) -> list[epath.Path]:
    """The step directories to average, best first (``by`` dev_loss) or newest first (latest)."""
    if num < 1:
        raise cli.Error(f"--num must be >= 1, got {num}")
    if by not in BY:
        raise cli.Error(f"--by must be one of {BY}, got {by!r}")
    paths.resolve(workdir, "--workdir")  # an unsupported scheme: one error line
    checkpoints = epath.Path(workdir) / ckpt.CHECKPOINTS  # as given: meta.json's "sources" name these steps
    steps = ckpt.step_dirs(checkpoints)
    if not steps:
        raise cli.Error(f"{checkpoints}: no finished checkpoint")
    if by == "latest":
        return steps[::-1][:num]
    scored = [(loss, -int(d.name), d) for d in steps if (loss := eval_loss(d)) is not None]
    if not scored:
        raise cli.Error(f"{checkpoints}: no checkpoint recorded a dev loss (use --by=latest, or train with eval)")
    return [d for _, _, d in sorted(scored)[:num]]


def _same_model(meta: dict, other: dict, where: epath.Path) -> None:
    for key in ("format", "config"):
        if meta.get(key) != other.get(key):
            raise cli.Error(f"{where}: meta.json {key} differs from the other checkpoints'; cannot average them")


def _mean(trees: list[dict], step_dirs: list[epath.Path], what: str) -> dict:
    """Element-wise mean of same-layout trees; floats summed in float64 and cast back, others must agree."""
    total: dict[str, np.ndarray] = {}
    dtypes: dict[str, np.dtype] = {}
    for i, (tree, d) in enumerate(zip(trees, step_dirs)):
        flat = flatten(tree)
        if i == 0:
            dtypes = {k: v.dtype for k, v in flat.items()}
            total = {k: v.astype(np.float64) if _is_float(v) else v for k, v in flat.items()}
            continue
        if set(flat) != set(total) or any(flat[k].shape != total[k].shape for k in flat):
            raise cli.Error(f"{d}: {what} names or shapes differ from {step_dirs[0]}'s; cannot average them")
        for k, v in flat.items():
            if _is_float(v):
                total[k] += v
            elif not np.array_equal(v, total[k]):
                raise cli.Error(f"{d}: non-float {what} {k} differs between checkpoints")
    n = len(trees)
    return unflatten({k: (v / n).astype(dtypes[k]) if _is_float(v) else v for k, v in total.items()})


def average(step_dirs: list[epath.Path]) -> tuple[dict, dict]:
    """(mean params, meta) of the checkpoints; floats are summed in float64 and cast back to their dtype."""
    trees, first_meta = [], None
    for d in step_dirs:
        params, meta = ckpt.load_checkpoint(d)
        if first_meta is None:
            first_meta = meta
        else:
            _same_model(first_meta, meta, d)
        trees.append(params)
    mean = _mean(trees, step_dirs, "parameter")
    meta = {k: v for k, v in first_meta.items() if k not in (ckpt.PLAYER, "step")}
    meta["averaged"] = {"steps": [int(d.name) for d in step_dirs], "sources": [str(d) for d in step_dirs]}
    return mean, meta


def average_buffers(step_dirs: list[epath.Path]) -> dict:
    """The mean of the exported player's buffers (``{}`` when the checkpoints have none), as ``average``'s params."""
    trees = [ckpt.load_buffers(d) for d in step_dirs]
    if not any(trees):
        return {}
    if not all(trees):
        raise cli.Error(f"{step_dirs[0]}: some of the checkpoints have buffers and some do not; cannot average them")
    return _mean(trees, step_dirs, "buffer")


def _is_float(v: np.ndarray) -> bool:
    return np.issubdtype(v.dtype, np.floating)


def average_checkpoints(
    workdir: str | os.PathLike, num: int, by: str, dst: str | os.PathLike
) -> tuple[epath.Path, list[epath.Path]]:
    """Chooses, averages and writes; returns (dst, the averaged step directories)."""
    paths.resolve(dst, "--dst")
    chosen = choose(workdir, num, by)
    params, meta = average(chosen)
    meta["averaged"]["by"] = by
    return ckpt.save_checkpoint(dst, params, meta, buffers=average_buffers(chosen)), chosen


def main(argv) -> int:
    del argv
    args = flags.FLAGS
    if not args.workdir or not args.dst:
        raise cli.Error("give --workdir=DIR and --dst=DIR")
    try:
        dst, chosen = average_checkpoints(args.workdir, args.num, args.by, args.dst)
    except ConversionError as e:
        raise cli.Error(str(e)) from None
    losses = [eval_loss(d) for d in chosen]
    steps = ", ".join(f"{d.name}" + (f" (dev loss {x:.4f})" if x is not None else "") for d, x in zip(chosen, losses))
    print(f"averaged {len(chosen)} checkpoints by {args.by}: {steps} -> {dst}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
