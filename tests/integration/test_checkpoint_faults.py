"""A checkpoint that cannot be written stops the trainer at once with one line naming the step, the path, the
cause and the last complete checkpoint, and leaves no half-written step behind. The fault is real: the trainer
process runs under a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so a large write fails with EFBIG as a full
disk fails with ENOSPC) smaller than its optimizer state's data file."""

from __future__ import annotations

import resource
import signal
import subprocess

import train_helpers as th

QWEN2 = "configs/qwen2.py:tiny"
LIMIT_BYTES = 100_000  # the tiny qwen2's optimizer state is written as files of several hundred kB


def _with_file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def _overrides(steps: int) -> list[str]:
    return [f"--config.train.num_steps={steps}", "--config.train.checkpoint_every=2", "--config.train.eval_every=0",
            "--config.train.log_every=1"]  # fmt: skip


def test_a_failed_save_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    first = th.run(workdir, _overrides(2), config=QWEN2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert th.complete_steps(workdir) == [2]

    # resumed from step 2 with room for nothing larger than LIMIT_BYTES: the save of step 4 fails
    proc = subprocess.run(th.command(workdir, _overrides(8), QWEN2), cwd=th.ROOT, env=th.env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=_with_file_size_limit)  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    checkpoints = workdir / "checkpoints"
    assert last.startswith(f"error: checkpoint: saving step 4 to {checkpoints}/4 failed (Failed to write "), last
    assert "File too large" in last
    assert last.endswith(f"; the last complete checkpoint is step 2 ({checkpoints}/2)")
    assert "sovits2_jax/" not in proc.stderr  # no traceback through our code
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2"]  # no half-written step left
    logged = [r["step"] for r in th.read_metrics(workdir) if "train/loss" in r]
    assert max(logged) <= 6  # it stopped at once, not at step 8
