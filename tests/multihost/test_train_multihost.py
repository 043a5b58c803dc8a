"""The trainer as a real multi-process job on this machine (8 CPU devices in all).

One process x 8 devices is the reference. Two processes x 4 devices (launch/local.sh) log the same losses (the
data is split into 2 logical shards in every run, so the global batches are the same). One process is SIGKILLed
after a checkpoint, the launcher stops the other, and the relaunched job resumes; one process of the relaunched job
gets SIGTERM, both save the same step and exit 0, and a third launch finishes. A 2-process checkpoint resumes in
1 process, and a 1-process checkpoint resumes in a 2-task job started by launch/slurm.sbatch's own srun line under a
faked SLURM (a local `srun` that starts the tasks with SLURM's variables), all matching the reference within 1e-5.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import train_helpers as th

ROOT = th.ROOT
STEPS = 8
FAKE_SRUN = """#!/usr/bin/env bash
# srun for tests: starts $SLURM_NTASKS local tasks with the variables jax.distributed's SLURM detection reads
set -u
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_TASKS_PER_NODE=$SLURM_NTASKS \\
    SLURM_STEP_NUM_NODES=1 SLURM_NODEID=0 "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
"""


def overrides(corpus, **extra):
    # two data shards of 4 rows each: the same 8-row global batch for 1 or 2 processes
    values = {"train.num_steps": STEPS, "train.checkpoint_every": 2, "train.eval_every": 0, "data.num_shards": 2,
              "data.max_frames_in_batch": 320, "data.batch_multiple": 4, **extra}  # fmt: skip
    return th.llm_overrides(corpus, **values)


def local_job(workdir, corpus, log, processes=2):
    cmd = ["bash", "launch/local.sh", "-n", str(processes), "--devices_per_process", str(8 // processes), "--",
           *th.command(workdir, overrides(corpus))]  # fmt: skip
    env = th.env(1)
    env.pop("XLA_FLAGS")
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the trainer process with SOVITS2_PROCESS_ID=rank among the launcher's descendants."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != launcher.pid:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if f"SOVITS2_PROCESS_ID={rank}".encode() in environ and b"sovits2_jax.train" in cmdline:
            return int(proc.name)
    raise AssertionError(f"no trainer process of rank {rank}")


def assert_losses_match(workdir, expected, steps):
    got = th.losses(workdir)
    for step in steps:
        assert step in got, (step, sorted(got))
        for value in got[step]:
            assert value == pytest.approx(expected[step], abs=1e-5), (step, got[step], expected[step])


@pytest.fixture(scope="module")
def reference(tiny_corpus, build_once):
    """The one-process x 8-device run (once per session: ``build_once``): its workdir and losses."""

    def run(workdir):
        proc = th.run(workdir, overrides(tiny_corpus), devices=8)
        assert proc.returncode == 0, proc.stderr[-3000:]

    workdir = build_once("multihost_one_process", run)
    losses = {step: values[0] for step, values in th.losses(workdir).items()}
    assert sorted(losses) == list(range(1, STEPS + 1))
    return workdir, losses


def test_two_processes_match_one_and_survive_a_killed_process(reference, tiny_corpus, tmp_path):
    _, expected = reference
    workdir = tmp_path / "two_processes"
    job = local_job(workdir, tiny_corpus, tmp_path / "first.log")
    th.wait_for(lambda: 2 in th.complete_steps(workdir), job, timeout=600)
    os.kill(rank_pid(job, 1), signal.SIGKILL)
    t0 = time.monotonic()
    job.wait(timeout=120)  # the launcher notices and stops process 0: no hang
    log = (tmp_path / "first.log").read_text()
    assert job.returncode != 0 and time.monotonic() - t0 < 60
    assert "process 1 exited with code -9" in log, log[-2000:]
    last = max(th.complete_steps(workdir))
    assert last >= 2

    # relaunched: resumes; SIGTERM to one process -> both save the step they agree on and exit 0
    job = local_job(workdir, tiny_corpus, tmp_path / "second.log")
    th.wait_for(lambda: max(th.complete_steps(workdir)) > last, job, timeout=600)
    os.kill(rank_pid(job, 0), signal.SIGTERM)
    assert job.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    saved = [line for line in log.splitlines() if "SIGTERM: saved step" in line]
    assert len(saved) == 2 and saved[0].split("saved step")[1] == saved[1].split("saved step")[1], saved
    stopped = int(saved[0].split("saved step")[1].split(",")[0])
    assert stopped < STEPS and max(th.complete_steps(workdir)) == stopped

    job = local_job(workdir, tiny_corpus, tmp_path / "third.log")
    assert job.wait(timeout=600) == 0, (tmp_path / "third.log").read_text()[-3000:]
    assert th.complete_steps(workdir)[-1] == STEPS
    assert_losses_match(workdir, expected, range(1, STEPS + 1))


def test_checkpoints_move_between_one_process_and_a_slurm_job(reference, tiny_corpus, tmp_path):
    ref_dir, expected = reference
    # 1 process -> 2 SLURM tasks: resume the reference's step-2 checkpoint under launch/slurm.sbatch's srun line
    one = tmp_path / "from_one"
    shutil.copytree(ref_dir, one)
    for step in th.complete_steps(one):
        if step > 2:
            shutil.rmtree(one / "checkpoints" / str(step))
    (one / "metrics.jsonl").unlink()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = th.env(4)
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost",
               SLURM_SUBMIT_DIR=str(ROOT), SOVITS2_INIT_TIMEOUT="120")  # fmt: skip
    cmd = ["bash", "launch/slurm.sbatch", "--", *th.command(one, overrides(tiny_corpus))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert_losses_match(one, expected, range(3, STEPS + 1))

    # 2 processes -> 1: the SLURM job's step-4 checkpoint resumed by one process with 8 devices
    for step in th.complete_steps(one):
        if step > 4:
            shutil.rmtree(one / "checkpoints" / str(step))
    (one / "metrics.jsonl").unlink()
    proc = th.run(one, overrides(tiny_corpus), devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_losses_match(one, expected, range(5, STEPS + 1))
