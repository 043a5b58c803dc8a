"""The dpo, gpt_sovits2 and flow families train end to end through ``python -m sovits2_jax.train`` on the shared
tiny corpus (real subprocesses, Orbax checkpoints, metrics.jsonl): the loss falls, eval runs, checkpoints exist;
DPO's reference stays frozen, starts as the policy's init and loads from ``config.train.dpo.ref_from``."""

import math

import numpy as np
import pytest
import train_helpers as th

STEPS = 8


def _overrides(train_list, dev_list, **extra) -> list[str]:
    values = {
        "data.train_list": train_list,
        "data.dev_list": dev_list,
        "train.num_steps": STEPS,
        "train.log_every": 1,
        "train.eval_every": STEPS,
        "train.checkpoint_every": 4,
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in values.items()]


def _train(workdir, config, overrides):
    proc = th.run(workdir, overrides, config=config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = th.read_metrics(workdir)
    train = {r["step"]: r for r in records if "train/loss" in r}
    assert sorted(train) == list(range(1, STEPS + 1))
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [STEPS] and math.isfinite(evals[0]["eval/loss"])
    assert th.complete_steps(workdir) == [4, STEPS]
    for item in ("params", "opt_state", "train_state", "data", "meta"):
        assert (workdir / "checkpoints" / str(STEPS) / item).is_dir(), item
    assert all(r["train/skipped_steps"] == 0 for r in train.values())
    # each step's train scalars by their short names (metrics.jsonl writes them as train/<name>)
    return {step: {k.removeprefix("train/"): v for k, v in r.items()} for step, r in train.items()}


def _params(workdir, step: int) -> dict:
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "params")


def _leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _with_rejected(src_list: str, dst_dir, seed: int) -> str:
    """A copy of a corpus whose rows carry ``reject_speech_token``: the chosen tokens in a random order."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    dst_dir.mkdir()
    paths = []
    with open(src_list) as f:
        sources = f.read().split()
    for i, path in enumerate(sources):
        df = pd.read_parquet(path)
        df["reject_speech_token"] = [rng.permutation(np.asarray(t, np.int32)) for t in df["speech_token"]]
        paths.append(str(dst_dir / f"part{i}.parquet"))
        df.to_parquet(paths[-1])
    (dst_dir / "data.list").write_text("\n".join(paths) + "\n")
    return str(dst_dir / "data.list")


@pytest.fixture(scope="module")
def dpo_lists(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_corpus")
    train = _with_rejected(tiny_corpus.train_list, root / "train", 0)
    return train, _with_rejected(tiny_corpus.dev_list, root / "dev", 1)


DPO_DATA = {"data.bucket_lengths": "(80,)", "data.max_frames_in_batch": 640}


def test_dpo_trains_against_a_frozen_reference(dpo_lists, tmp_path):
    workdir = tmp_path / "dpo"
    train = _train(workdir, "configs/cosyvoice2.py:dpo_tiny", _overrides(*dpo_lists, **DPO_DATA))
    first, last = train[1], train[STEPS]
    # without ref_from the reference is the policy's init: no preference at step 1, DPO loss log 2, rewards 0
    assert first["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["chosen_reward"] == pytest.approx(0, abs=1e-7)
    assert first["rejected_reward"] == pytest.approx(0, abs=1e-7)
    assert first["loss"] == pytest.approx(first["dpo_loss"] + first["sft_loss"], rel=1e-6)
    assert last["loss"] < 0.9 * first["loss"], (first, last)
    # the policy learns the chosen (ordered) tokens faster than their shuffles: it comes to prefer them
    assert last["chosen_reward"] > last["rejected_reward"] and last["dpo_acc"] > 0.5
    assert last["dpo_loss"] < math.log(2) - 1e-4
    # the reference is frozen, the policy moves
    p4, p8 = _params(workdir, 4), _params(workdir, STEPS)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(p4["reference"]), _leaves(p8["reference"])))
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(p4["model"]), _leaves(p8["model"])))

    # init.path = the step-4 policy, ref_from = the step-8 policy (trainer checkpoints, through train/pretrained.py)
    again = tmp_path / "dpo_ref_from"
    extra = {**DPO_DATA, "train.num_steps": 2, "train.eval_every": 0, "train.checkpoint_every": 2}
    extra.update({"init.path": workdir / "checkpoints" / "4", "train.dpo.ref_from": workdir / "checkpoints" / "8"})
    proc = th.run(again, _overrides(*dpo_lists, **extra), config="configs/cosyvoice2.py:dpo_tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = _params(again, 2)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(loaded["reference"]), _leaves(p8["model"])))
    # the step-4 policy against the step-8 reference: a preference from the first step on
    assert abs(th.read_metrics(again)[0]["train/chosen_reward"]) > 1e-6


def test_gpt_sovits2_trains_on_packed_references(tiny_corpus, tmp_path):
    train = _train(
        tmp_path / "ar",
        "configs/gpt_sovits2.py:ar_tiny",
        _overrides(tiny_corpus.train_list, tiny_corpus.dev_list, **{"train.optimizer.lr": 3e-3}),
    )
    assert train[STEPS]["loss"] < 0.9 * train[1]["loss"], train
    assert all(0 <= r["acc"] <= 1 and r["target_tokens"] > 0 for r in train.values())


# one bucket of 4 x 160 frames; a 64-wide encoder (the tiny preset keeps the torch reference's 512) for speed
FLOW_OVERRIDES = {
    "data.bucket_lengths": "(160,)",
    "data.max_frames_in_batch": 640,
    "data.batch_multiple": 1,
    "train.optimizer.lr": 3e-3,
    **{f"model.{k}": v for k, v in (("input_size", 64), ("encoder.input_size", 64), ("encoder.output_size", 64))},
    "model.encoder.attention_heads": 2,
    "model.encoder.linear_units": 128,
}


def test_flow_trains_with_prompt_cfg_and_streaming_draws(tiny_corpus, tmp_path):
    overrides = _overrides(tiny_corpus.train_list, tiny_corpus.dev_list, **FLOW_OVERRIDES)
    train = _train(tmp_path / "flow", "configs/cosyvoice2.py:flow_tiny", overrides)
    losses = [train[s]["loss"] for s in range(1, STEPS + 1)]
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses
    streaming = {train[s]["streaming"] for s in train}
    assert streaming == {0.0, 1.0}  # both attention modes drawn
