"""Training logs: TensorBoard (tensorboardX) in WORKDIR/tensorboard (scalars; at the start of a run the config as
text and as hparams), WORKDIR/metrics.jsonl and a tqdm bar (on a terminal).

Only process 0 writes. Each logged step is one JSON object in metrics.jsonl: ``step``, ``time`` (wall clock, unix
seconds) and every scalar under its TensorBoard name, ``train/<name>`` (``train/loss``, ``train/lr``, ...) and on eval
steps ``eval/<name>`` (``eval/loss`` first). A resumed run appends; a step already in metrics.jsonl is written again
(its new values). ``read_metrics`` reads the file, older runs' short names (``loss``, ``eval_loss``) included.

A ``gs://`` workdir (sovits2_jax/paths.py) gets the same files: GCS objects cannot be appended to, so metrics.jsonl
is rewritten whole (at most every ``REWRITE_SECS`` and on close), and tensorboardX uploads its event file itself.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
from etils import epath

from sovits2_jax import paths

REWRITE_SECS = 10.0  # GCS takes about one update of an object per second


def _clean(value) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None  # JSON has no NaN


def hparams_of(config) -> dict:
    """The config's scalar settings by dotted key (numbers, strings, booleans; tuples as text), for TensorBoard's
    hparams dashboard."""
    from sovits2_jax.convert.mapping import flatten

    out = {}
    for key, value in flatten(config.to_dict() if hasattr(config, "to_dict") else dict(config)).items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (tuple, list)):
            out[key] = str(tuple(value))
    return out


class _Rewritten:
    """metrics.jsonl on storage that cannot append: the lines kept here, the object rewritten whole."""

    def __init__(self, path: epath.Path):
        self.path = path
        self.lines = [path.read_text()] if path.exists() else []  # a resumed run's earlier records
        self.written = -math.inf

    def write(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        if time.monotonic() - self.written >= REWRITE_SECS:
            self.close()

    def close(self) -> None:
        self.path.write_text("".join(self.lines))
        self.written = time.monotonic()


class MetricsWriter:
    def __init__(self, workdir: str | os.PathLike, num_steps: int, start_step: int = 0, config=None):
        self.active = jax.process_index() == 0
        self.writer = self.file = self.bar = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        workdir = paths.resolve(workdir, "workdir")
        workdir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(workdir / "tensorboard"), flush_secs=10)
        if config is not None and start_step == 0:  # once per run, not again on resume
            self._write_config(config)
        log = workdir / "metrics.jsonl"
        self.file = _Rewritten(log) if paths.is_remote(log) else open(log, "a")  # noqa: SIM115 (closed in close())
        # disable=None: a bar on a terminal only; logs get the `step N:` lines
        self.bar = tqdm(total=num_steps, initial=start_step, unit="step", disable=None, dynamic_ncols=True,
                        mininterval=1.0)  # fmt: skip

    def _write_config(self, config) -> None:
        """The config as text (``config``) and as hparams (TensorBoard's hparams dashboard, against eval/loss)."""
        from tensorboardX.summary import hparams

        text = config.to_json_best_effort(indent=2) if hasattr(config, "to_json_best_effort") else json.dumps(config)
        self.writer.add_text("config", "```\n" + text + "\n```", 0)
        file_writer = self.writer._get_file_writer()
        for summary in hparams(hparams_of(config), {"eval/loss": math.nan}):
            file_writer.add_summary(summary)

    def write(self, step: int, train: Mapping[str, float] | None = None, eval: Mapping[str, float] | None = None):
        """Writes one logged step: ``train`` scalars (must hold ``loss``) and/or ``eval`` scalars."""
        if not self.active:
            return
        record: dict = {"step": int(step), "time": round(time.time(), 3)}  # wall clock (unix seconds)
        for prefix, scalars in (("train", train), ("eval", eval)):
            for name, value in (scalars or {}).items():
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)
                record[f"{prefix}/{name}"] = _clean(value)
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if train:
            keys = ("loss", "grad_norm", "lr", "step_time", "mfu")
            line = " ".join(f"{k}={train[k]:.4g}" for k in keys if k in train)
            self.bar.set_postfix_str(line, refresh=False)
            self.bar.write(f"step {step}: {line}")
        if eval:
            self.bar.write(f"step {step}: " + " ".join(f"eval_{k}={v:.4g}" for k, v in eval.items()))

    def advance(self, step: int) -> None:
        """Moves the progress bar to ``step``."""
        if self.active and step > self.bar.n:
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.writer.close()
            self.file.close()


def _tensorboard_name(key: str) -> str:
    """A metrics.jsonl key as written today: an older run's ``loss`` / ``eval_loss`` -> ``train/loss`` /
    ``eval/loss``."""
    if key in ("step", "time") or key.startswith(("train/", "eval/")):
        return key
    return f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl in order, keys as TensorBoard names; [] when the file does not exist. A line
    cut short (the process was killed while writing it) is left out."""
    path = epath.Path(path)
    if not path.is_file():
        return []
    records = []
    with path.open() as f:
        for line in f:
            try:
                records.append({_tensorboard_name(k): v for k, v in json.loads(line).items()})
            except ValueError:
                continue
    return records
