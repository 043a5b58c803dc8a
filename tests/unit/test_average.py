"""Checkpoint averaging: the mean of the chosen trainer checkpoints (by dev loss or latest), loadable again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import parts
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.train import average

REPO = Path(__file__).resolve().parents[2]
EVAL_LOSSES = {1: 3.0, 2: 1.0, 3: None, 4: 2.0, 5: 0.5}  # step 3 saved between evals: no dev loss


def _players(step: int) -> dict:
    rng = np.random.default_rng(step)
    model = {
        "encoder": {"blocks": {"0": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)}}},
        "bias": rng.normal(size=(5,)).astype(np.float32),
    }
    return {"model": model, "other": {"w": np.full((2,), float(step), np.float32)}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, write_trainer_steps) -> Path:
    root = tmp_path_factory.mktemp("avg")
    meta = parts.export_meta("flow", FlowConfig(), player="model")
    write_trainer_steps(root, {s: _players(s) for s in EVAL_LOSSES}, meta, EVAL_LOSSES)
    return root


def _expected_mean(steps) -> dict[str, np.ndarray]:
    flats = [flatten(_players(s)["model"]) for s in steps]
    return {k: np.mean(np.stack([f[k] for f in flats]).astype(np.float64), axis=0).astype(np.float32) for k in flats[0]}


def _assert_params(params: dict, expected: dict[str, np.ndarray]) -> None:
    flat = flatten(params)
    assert sorted(flat) == sorted(expected)
    for k, v in expected.items():
        assert flat[k].dtype == np.float32
        np.testing.assert_array_equal(flat[k], v, err_msg=k)


def test_average_by_dev_loss_is_the_mean_of_the_best(workdir, tmp_path):
    dst = tmp_path / "avg"
    written, chosen = average.average_checkpoints(workdir, 3, "dev_loss", dst)
    assert [int(d.name) for d in chosen] == [5, 2, 4]  # ascending dev loss; step 3 has none
    params, config = parts.load(written, "flow")
    _assert_params(params, _expected_mean([5, 2, 4]))
    assert config == FlowConfig()
    meta = ckpt.read_meta(dst)
    assert meta["format"] == "cosyvoice2.flow" and meta["averaged"]["steps"] == [5, 2, 4]
    assert ckpt.PLAYER not in meta  # the averaged params are the exported player's alone
    assert [p.name for p in tmp_path.iterdir()] == ["avg"]  # nothing staged left behind


def test_dev_loss_from_metrics_log_without_best_tracking(tmp_path, write_trainer_steps):
    meta = parts.export_meta("flow", FlowConfig(), player="model")
    write_trainer_steps(tmp_path, {s: _players(s) for s in EVAL_LOSSES}, meta, EVAL_LOSSES, keep_best=0)
    assert not (tmp_path / "checkpoints" / "5" / "metrics").exists()
    assert [average.eval_loss(d) for d in ckpt.step_dirs(tmp_path / "checkpoints")] == [3.0, 1.0, None, 2.0, 0.5]
    params, _ = average.average(average.choose(tmp_path, 2, "dev_loss"))
    _assert_params(params, _expected_mean([5, 2]))


def test_average_latest_via_the_cli(workdir, tmp_path):
    dst = tmp_path / "latest"
    cmd = [
        sys.executable,
        "-m",
        "sovits2_jax.train.average",
        f"--workdir={workdir}",
        "--num=2",
        "--by=latest",
        f"--dst={dst}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "averaged 2 checkpoints by latest: 5 (dev loss 0.5000), 4 (dev loss 2.0000)" in proc.stdout
    # reading a step's params item on its own is expected: Orbax's notice about its missing metadata is not shown
    assert "Metadata file does not exist" not in proc.stderr, proc.stderr
    params, _ = ckpt.load_checkpoint(dst)
    _assert_params(params, _expected_mean([5, 4]))
    # more than there are: all of them
    _, chosen = average.average_checkpoints(workdir, 10, "latest", tmp_path / "all")
    assert [int(d.name) for d in chosen] == [5, 4, 3, 2, 1]


def test_bad_workdirs_give_one_clear_error(tmp_path, workdir, write_trainer_steps):
    with pytest.raises(average.cli.Error, match="no finished checkpoint"):
        average.choose(tmp_path, 5, "latest")
    no_eval = tmp_path / "no_eval"
    write_trainer_steps(no_eval, {1: _players(1)}, {"format": "cosyvoice2.flow", "config": {}}, {1: None}, 0)
    with pytest.raises(average.cli.Error, match="no checkpoint recorded a dev loss"):
        average.choose(no_eval, 5, "dev_loss")
    with pytest.raises(average.cli.Error, match="--num must be >= 1"):
        average.choose(workdir, 0, "latest")
    # a step of another model in the same workdir is refused by name
    other = tmp_path / "mixed"
    write_trainer_steps(
        other, {1: _players(1)}, {"format": "cosyvoice2.flow", "config": {"a": 1}, "player": "model"}, {1: 1.0}
    )
    write_trainer_steps(
        other, {2: _players(2)}, {"format": "cosyvoice2.hift", "config": {"a": 1}, "player": "model"}, {2: 1.0}
    )
    with pytest.raises(average.cli.Error, match=r"meta\.json format differs"):
        average.average(average.choose(other, 2, "latest"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sovits2_jax.train.average",
            f"--workdir={tmp_path / 'none'}",
            f"--dst={tmp_path / 'x'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no finished checkpoint" in proc.stderr and "Traceback" not in proc.stderr
