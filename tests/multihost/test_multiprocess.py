"""Two processes x 4 CPU devices form one 8-device mesh; the step result equals the single-process 8-device one."""

import json
import subprocess
import sys

import pytest

from sovits2_jax.cluster.selftest import step_result
from sovits2_jax.parallel.distributed import cluster_kind, initialize
from sovits2_jax.validation import load_config


def test_two_processes_match_one(tmp_path):
    overrides = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
    cmd = [
        sys.executable,
        "-m",
        "sovits2_jax.cluster.launch_local",
        "-n",
        "2",
        "--devices_per_process",
        "4",
        "--timeout_s",
        "300",
        "--",
        sys.executable,
        "-m",
        "sovits2_jax.cluster.selftest",
        "--config=configs/qwen2.py:tiny",
        *overrides,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:]
    results = [json.loads(line.split("SELFTEST ", 1)[1]) for line in out.stdout.splitlines() if "SELFTEST " in line]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 8 for r in results)

    config = load_config("configs/qwen2.py:tiny")
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    single = step_result(config, 32)  # this process has 8 simulated devices (conftest)
    for r in results:
        assert r["loss"] == pytest.approx(single["loss"], abs=1e-5)
        assert r["grad_norm"] == pytest.approx(single["grad_norm"], abs=1e-5)


def test_a_failing_process_stops_the_job():
    cmd = [
        sys.executable,
        "-m",
        "sovits2_jax.cluster.launch_local",
        "-n",
        "2",
        "--timeout_s",
        "60",
        "--",
        sys.executable,
        "-c",
        "import os, sys, time; sys.exit(3) if os.environ['SOVITS2_PROCESS_ID'] == '1' else time.sleep(120)",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 3


def test_environment_detection_and_errors():
    assert cluster_kind({}) is None
    assert cluster_kind({"SLURM_NTASKS": "4"}) == "slurm"
    assert cluster_kind({"SOVITS2_COORDINATOR": "h:1"}) == "explicit"
    initialize(env={})  # single process: nothing to do
    with pytest.raises(RuntimeError, match="SOVITS2_NUM_PROCESSES"):
        initialize(env={"SOVITS2_COORDINATOR": "127.0.0.1:1"})
