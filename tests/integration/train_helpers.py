"""Running ``python -m sovits2_jax.train`` in subprocesses for the trainer tests (``import train_helpers``).

Subprocesses share a persistent JAX compilation cache (the session's, which tests/conftest.py puts in
``$JAX_COMPILATION_CACHE_DIR``), so a restarted run loads the executable the first one compiled instead of compiling
again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or Path(tempfile.gettempdir()) / "sovits2_jax_test_jax_cache")
LLM = "configs/cosyvoice2.py:llm_tiny"


def llm_overrides(corpus, **extra) -> list[str]:
    """The tiny llm on the shared corpus: one bucket of 8 rows x 80 tokens (one compiled shape), 8 steps."""
    values = {
        "data.train_list": corpus.train_list,
        "data.dev_list": corpus.dev_list,
        "data.bucket_lengths": "(80,)",
        "data.max_frames_in_batch": 640,
        "data.batch_multiple": 8,
        "train.num_steps": 8,
        "train.log_every": 1,
        "train.eval_every": 4,
        "train.checkpoint_every": 3,
        "train.keep_last": 10,
        "train.optimizer.lr": 3e-3,
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in values.items()]


# XLA:CPU's backend (LLVM) optimisation off: about half the compile time of a tiny model's init / train step. The
# default of every trainer run here (they compile much and step little), so runs compared with each other share it
# (numerics may differ from the default level in the last bits).
FAST_COMPILE = "--xla_backend_optimization_level=0"


def env(devices: int = 1, xla_flags: str = FAST_COMPILE) -> dict:
    out = dict(os.environ)
    device_count = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    out.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join(f for f in (device_count, xla_flags) if f),
        JAX_COMPILATION_CACHE_DIR=str(CACHE),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=str(ROOT),
    )
    return out


def command(workdir, overrides, config: str = LLM) -> list[str]:
    return [sys.executable, "-m", "sovits2_jax.train", f"--config={config}", f"--workdir={workdir}", *overrides]


def run(
    workdir, overrides, *, config: str = LLM, devices: int = 1, timeout: float = 600, xla_flags: str = FAST_COMPILE
):
    """Runs the trainer to completion; returns the CompletedProcess (stdout/stderr text). ``xla_flags``: more
    XLA_FLAGS for the trainer (default FAST_COMPILE)."""
    return subprocess.run(
        command(workdir, overrides, config), cwd=ROOT, env=env(devices, xla_flags), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def start(workdir, overrides, *, config: str = LLM, devices: int = 1, log=None) -> subprocess.Popen:
    """Starts the trainer in the background (stderr to ``log``, a path)."""
    with open(log or os.devnull, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command(workdir, overrides, config), cwd=ROOT, env=env(devices), stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600, poll: float = 0.01) -> None:
    """Polls ``predicate()`` until true; fails when ``proc`` exits first or on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited with {proc.returncode} before the awaited state")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the trainer")
        time.sleep(poll)


def read_metrics(workdir) -> list[dict]:
    """WORKDIR/metrics.jsonl's records, read as the file is (keys as the trainer wrote them)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(workdir) -> dict[int, list[float]]:
    """Every logged train loss by step (a step logged by several runs of a resumed workdir has several)."""
    out: dict[int, list[float]] = {}
    for r in read_metrics(workdir):
        if "train/loss" in r:
            out.setdefault(r["step"], []).append(r["train/loss"])
    return out


def complete_steps(workdir) -> list[int]:
    ckpt = Path(workdir) / "checkpoints"
    if not ckpt.is_dir():
        return []
    return sorted(int(d.name) for d in ckpt.iterdir() if d.name.isdigit() and (d / "commit_success.txt").exists())


def saving(workdir, step: int) -> bool:
    """An Orbax save of ``step`` is in flight (its temporary directory exists)."""
    ckpt = Path(workdir) / "checkpoints"
    return ckpt.is_dir() and any(d.name.startswith(f"{step}.orbax-checkpoint-tmp") for d in ckpt.iterdir())
