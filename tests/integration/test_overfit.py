"""The training and inference glue agree: through the real trainer, the tiny LM and flow overfit ONE short espeak
utterance, and inference brings it back from its text and its tokens.

- LM (``llm_tiny``): decoding from the text alone with the engine's own sampling returns the utterance's tokens.
  A target shifted against its input, a mask that lets a position see its own target, or a decode that lays out
  its prompt unlike training would leave it far off.
- Flow (``flow_tiny`` with the demo's 64-wide encoder, no classifier-free dropout or guidance): its mel from the
  utterance's tokens lies near the truth frame by frame, and nearer than the truth shifted by one frame (a token /
  mel misalignment between the data task, the loss and inference fails this); from a prompt of the first third
  (its tokens and mel, as zero-shot inference passes them) the rest lands in place too (a prompt / target split
  off by a token misplaces it). One memorised utterance does not show whether the prompt is used: the flow
  reproduces it from the tokens alone.

Thresholds sit between what a correct run reaches (measured on the 2-core machine: LM token error 0.0 and
duration 1.0 for three seeds; flow mel L1 0.82 unprompted and prompted, 1.05 shifted by one frame, 1.24 for the
mean mel) and the failures.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import train_helpers

TEXT = "A fox crept along the edge of the field at dawn."
LM_STEPS = 300
FLOW_STEPS = 1500
FLOW_SETTINGS = dict(
    **{"model.input_size": 64, "model.encoder.input_size": 64, "model.encoder.output_size": 64},
    **{"model.encoder.attention_heads": 2, "model.encoder.linear_units": 128},
    **{"model.cfm.training_cfg_rate": 0.0, "model.cfm.inference_cfg_rate": 0.0},
)


def _one_utterance(root) -> None:
    from sovits2_jax.data.prep import synthetic
    from sovits2_jax.data.prep.corpus import Job, Speaker, render

    speaker = Speaker("1000", "en", "en-us+m1", 170, 40, 60)
    wav = render([Job("u", "u", TEXT, speaker)])[0]
    rng = np.random.default_rng(0)
    row = dict(utt="1000_10_000000_000000", wav="/espeak/u.wav", audio_data=synthetic.wav_bytes(wav, 24000),
               text=TEXT, spk="1000", utt_embedding=rng.standard_normal(192), spk_embedding=rng.standard_normal(192),
               speech_token=rng.integers(0, 6561, size=int(len(wav) / 24000 * 25)))  # fmt: skip
    for split in ("train", "dev"):
        synthetic.write_corpus(str(root / split), [row], rows_per_file=1)


def _train(workdir, config: str, lists, steps: int, extra: dict) -> None:
    values = {"data.train_list": lists.train, "data.dev_list": lists.dev, "data.num_buckets": 1,
              "data.batch_multiple": 1, "train.num_steps": steps, "train.log_every": steps // 4,
              "train.eval_every": steps, "train.checkpoint_every": steps, **extra}  # fmt: skip
    # XLA's default optimisation: these runs are bound by their steps, which run 2-3x slower without it
    out = train_helpers.run(workdir, [f"--config.{k}={v}" for k, v in values.items()], config=config, timeout=900,
                            xla_flags="")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def overfit(build_once):
    """The utterance's corpus and both trained workdirs (built once per session)."""

    def build(root):
        _one_utterance(root)
        lists = types.SimpleNamespace(train=str(root / "train" / "data.list"), dev=str(root / "dev" / "data.list"))
        _train(root / "llm", "configs/cosyvoice2.py:llm_tiny", lists, LM_STEPS,
               {"data.max_frames_in_batch": 256, "train.optimizer.lr": 3e-3})  # fmt: skip
        _train(root / "flow", "configs/cosyvoice2.py:flow_tiny", lists, FLOW_STEPS,
               {"data.max_frames_in_batch": 240, **FLOW_SETTINGS})  # fmt: skip

    root = build_once("overfit_one_utterance", build)
    return root


def _batch(config_name: str, root, family: str, extra: dict) -> dict:
    """The first training batch the data task makes of the utterance (its text ids, tokens, mel as trained on)."""
    import importlib

    from sovits2_jax.train import family as family_lib
    from sovits2_jax.train import trainer

    cfg = importlib.import_module("configs.cosyvoice2").get_config(config_name)
    cfg.data.train_list = str(root / "train" / "data.list")
    cfg.data.num_buckets, cfg.data.batch_multiple = 1, 1
    for key, value in extra.items():
        cfg.data[key] = value
    return {k: np.asarray(v) for k, v in next(iter(trainer.open_batches(family_lib.get(family), cfg, "train"))).items()}


def _state(workdir, part: str):
    from sovits2_jax.convert import parts
    from sovits2_jax.convert.mapping import flatten
    from sovits2_jax.convert.params import params_from_flat

    params, config = parts.load(workdir, part)
    graphdef, params = params_from_flat(lambda: parts.build_module(part, config), flatten(params))
    return graphdef, params, config


def test_the_lm_decodes_the_overfit_utterance_from_its_text(overfit):
    from sovits2_jax.demo.ladder import token_scores
    from sovits2_jax.infer.cosyvoice2.engine import Engine
    from sovits2_jax.infer.cosyvoice2.inputs import ModelInput

    batch = _batch("llm_tiny", overfit, "llm", {"max_frames_in_batch": 256})
    text = batch["text_token"][0, : batch["text_token_len"][0]]
    truth = batch["speech_token"][0, : batch["speech_token_len"][0]]
    graphdef, params, config = _state(overfit / "llm", "llm")
    flow = _state(overfit / "flow", "flow")[:2]
    engine = Engine((graphdef, params, config), flow, flow)  # no vocoder runs: speech_tokens only
    scores = [token_scores(engine.speech_tokens([ModelInput(text=text)], seed)[0], truth) for seed in (0, 1)]
    for s in scores:  # a correct run: token error 0.0, duration 1.0 (both seeds)
        assert s["token_error"] <= 0.15 and abs(s["duration_ratio"] - 1) <= 0.1, scores


def test_the_flow_rebuilds_the_overfit_mel_in_place_with_and_without_a_prompt(overfit):
    from sovits2_jax.eval.mel_distance import frame_distances
    from sovits2_jax.infer.cosyvoice2.token2wav import fixed_noise, flow_batch

    batch = _batch("flow_tiny", overfit, "flow", {"max_frames_in_batch": 240})
    n = int(batch["speech_token_len"][0])
    tokens, mel, embedding = batch["speech_token"][0, :n], batch["speech_feat"][0, : 2 * n], batch["embedding"][0]
    graphdef, params, _ = _state(overfit / "flow", "flow")
    ours = flow_batch(graphdef, params, [tokens], [tokens[:0]], [mel[:0]], [embedding], fixed_noise())[0]
    here = frame_distances(ours, mel)
    shifted = [frame_distances(ours[1:], mel[:-1]), frame_distances(ours[:-1], mel[1:])]
    baseline = frame_distances(np.broadcast_to(mel.mean(0), mel.shape), mel)
    k = n // 3
    rest = flow_batch(graphdef, params, [tokens[k:]], [tokens[:k]], [mel[: 2 * k]], [embedding], fixed_noise())[0]
    prompted = frame_distances(rest, mel[2 * k :])
    report = dict(here=here, shifted=shifted, baseline=baseline, prompted=prompted)
    assert here["length_ratio"] == 1.0 and prompted["length_ratio"] == 1.0, report
    assert here["l1"] <= 0.75 * baseline["l1"], report
    assert all(here["mcd"] < s["mcd"] for s in shifted), report
    assert prompted["l1"] <= 0.75 * baseline["l1"], report
    assert prompted["mcd"] < frame_distances(rest[1:], mel[2 * k : -1])["mcd"], report
