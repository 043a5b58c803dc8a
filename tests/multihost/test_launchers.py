"""The cluster launchers' dry runs, and a job whose second process never starts."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sovits2_jax.cluster.launch_local import free_port

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [".venv/bin/python", "-m", "sovits2_jax.train", "--config=configs/cosyvoice2.py:llm", "--workdir=/ckpt/llm"]


def run(*args, env=None):
    out = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def rank_lines(text):
    return {int(m.group(1)): line for line in text.splitlines() if (m := re.search(r"\[rank (\d+)\]", line))}


def test_local_dry_run_lists_every_rank_with_one_coordinator():
    out = run(sys.executable, "-m", "sovits2_jax.cluster.launch_local", "-n", "3", "--devices_per_process", "2",
              "--dry_run", "--", *TRAIN)  # fmt: skip
    env_lines = [line for line in out.splitlines() if "env:" in line]
    assert [re.search(r"SOVITS2_PROCESS_ID=(\d)", line).group(1) for line in env_lines] == ["0", "1", "2"]
    assert len({re.search(r"SOVITS2_COORDINATOR=(\S+)", line).group(1) for line in env_lines}) == 1
    assert all("SOVITS2_NUM_PROCESSES=3" in line and "device_count=2" in line for line in env_lines)
    assert out.count("command: " + " ".join(TRAIN)) == 3


def test_gpu_multinode_dry_run_ranks_per_gpu():
    out = run("bash", "launch/gpu_multinode.sh", "--coordinator", "10.0.0.1:1234", "--num_nodes", "2", "--node_rank",
              "1", "--procs_per_node", "4", "--gpus_per_node", "4", "--dry_run", "--", *TRAIN)  # fmt: skip
    ranks = rank_lines(out)
    assert sorted(ranks) == [4, 5, 6, 7]  # node 1 of 2, 4 processes per node
    for rank, line in ranks.items():
        assert f"SOVITS2_PROCESS_ID={rank} " in line and f"CUDA_VISIBLE_DEVICES={rank - 4}" in line
        assert "SOVITS2_NUM_PROCESSES=8" in line and "SOVITS2_COORDINATOR=10.0.0.1:1234" in line
        assert line.endswith(" ".join(TRAIN))
    one = rank_lines(run("bash", "launch/gpu_multinode.sh", "--coordinator", "h:1", "--num_nodes", "3", "--node_rank",
                         "2", "--dry_run", "--", "cmd"))  # fmt: skip
    assert list(one) == [2] and "CUDA_VISIBLE_DEVICES" not in one[2]


def test_tpu_pod_dry_run_runs_the_same_command_on_all_workers():
    out = run("bash", "launch/tpu_pod.sh", "mypod", "us-central2-b", "--project", "proj", "--num_workers", "4",
              "--dry_run", "--", *TRAIN)  # fmt: skip
    gcloud = next(line for line in out.splitlines() if line.startswith("gcloud: "))
    for part in ("tpus tpu-vm ssh mypod", "--zone us-central2-b", "--worker=all", "--project proj"):
        assert part in gcloud
    ranks = rank_lines(out)
    assert sorted(ranks) == [0, 1, 2, 3]
    assert len({line.split(": ", 1)[1] for line in ranks.values()}) == 1  # the same command everywhere
    assert "sovits2_jax.train --config=configs/cosyvoice2.py:llm" in ranks[0]


def test_jobset_renders_an_indexed_job_with_pod_zero_as_coordinator():
    out = run("bash", "launch/k8s/jobset.sh", "--name", "llm", "--hosts", "4", "--image", "reg/sovits2:1", "--gpus",
              "8", "--dry_run", "--", *TRAIN, "--config.train.log_every=5")  # fmt: skip
    doc = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert doc["kind"] == "JobSet" and job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] == 4
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["SOVITS2_COORDINATOR"] == "llm-workers-0-0.llm:8476"
    assert env["SOVITS2_NUM_PROCESSES"] == "4"
    assert "job-completion-index" in env["SOVITS2_PROCESS_ID"]["fieldRef"]["fieldPath"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["command"][:2] == ["bash", "-c"] and "--config.train.log_every=5" in container["command"][2]
    assert sorted(rank_lines(out)) == [0, 1, 2, 3]


def test_slurm_dry_run_shows_the_srun_line():
    env = {**os.environ, "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost"}
    out = run("bash", "launch/slurm.sbatch", "--dry_run", "--", *TRAIN, env=env)
    assert "srun: srun --kill-on-bad-exit=1" in out and " ".join(TRAIN) in out
    assert sorted(rank_lines(out)) == [0, 1]


def test_a_process_that_never_arrives_is_named_within_the_timeout():
    port = free_port()
    env = {**os.environ, "SOVITS2_COORDINATOR": f"127.0.0.1:{port}", "SOVITS2_NUM_PROCESSES": "3",
           "SOVITS2_PROCESS_ID": "0", "SOVITS2_INIT_TIMEOUT": "8", "JAX_PLATFORMS": "cpu"}  # fmt: skip
    joiner = subprocess.Popen(
        [sys.executable, "-m", "sovits2_jax.cluster.selftest", "--config=configs/qwen2.py:tiny"],
        cwd=ROOT, env={**env, "SOVITS2_PROCESS_ID": "2"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sovits2_jax.cluster.selftest", "--config=configs/qwen2.py:tiny"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - t0
    joiner_out, _ = joiner.communicate(timeout=120)
    assert out.returncode == 1, out.stderr
    assert "process(es) [1] of 3 never joined" in out.stderr  # process 2 arrived, 1 never started
    assert elapsed < 60
    assert joiner.returncode == 1 and "did not start the job" in joiner_out
