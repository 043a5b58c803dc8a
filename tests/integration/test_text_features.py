"""GPT-SoVITS2 on text-encoder ids and features: the preparation stage (``python -m
sovits2_jax.data.prep.text_features``, a random-init encoder and a sentencepiece tokenizer trained on the corpus),
the gpt_sovits2 data task reading its columns, the AR family's sizes, validation and training, and inference with
a model directory's ``text_encoder/``."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import train_helpers as th

from sovits2_jax.convert import text_encoder as te
from sovits2_jax.data import text_columns
from sovits2_jax.data.prep import synthetic
from sovits2_jax.data.prep import text_features as stage
from sovits2_jax.text.layouts import TEXT

EMPTY, LONG = 5, 9  # train rows the stage must skip
LONG_TEXT = " ".join(["quietly"] * 600)  # > 512 tokens: past the tiny encoder's positions


def _paths(data_list) -> list[str]:
    with open(data_list) as f:
        return f.read().split()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A 2-speaker corpus (16 train rows in 4 shards, 4 dev rows) with an empty and an overlong transcript, run
    through the stage's CLI with a random encoder; the shards as they were before, by path."""
    root = tmp_path_factory.mktemp("text_features")
    rows = synthetic.make_rows(20, num_speakers=2, min_seconds=1.0, max_seconds=2.0, seed=7)
    rows[EMPTY]["text"], rows[LONG]["text"] = "", LONG_TEXT
    train = synthetic.write_corpus(str(root / "train"), rows[:16], rows_per_file=4)
    dev = synthetic.write_corpus(str(root / "dev"), rows[16:], rows_per_file=4)
    before = {p: pq.read_table(p) for lst in (train, dev) for p in _paths(lst)}
    cmd = [sys.executable, "-m", "sovits2_jax.data.prep.text_features", f"--data_list={train}", f"--data_list={dev}",
           "--text_encoder=random", f"--save_to={root / 'encoder'}", "--batch_size=4"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=th.ROOT, env=th.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(root=root, rows=rows, train=train, dev=dev, before=before, log=proc.stderr, encoder=root / "encoder")


def _all_features(table) -> np.ndarray:
    return np.concatenate([np.asarray(f, np.float32) for f in table.column(text_columns.FEATURE).to_pylist() if f])


def _tables(data_list):
    return {p: pq.read_table(p) for p in _paths(data_list)}


def test_stage_writes_ids_and_encoder_features_and_skips_bad_rows(prepared):
    assert "random-init tiny encoder" in prepared["log"] and str(prepared["encoder"]) in prepared["log"]
    encoder = te.load(prepared["encoder"])
    assert encoder.hidden_size == 32 and 20 < encoder.vocab_size <= 1002
    by_utt = {r["utt"]: r for r in prepared["rows"]}
    ids, stored = [], []
    for lst in (prepared["train"], prepared["dev"]):
        for path, table in _tables(lst).items():
            old = prepared["before"][path]
            assert table.column_names == [*old.column_names, *text_columns.COLUMNS]
            assert table.select(old.column_names).equals(old)  # the CosyVoice columns as they were
            info = text_columns.read_info(path)
            assert info["dim"] == 32 and info["fingerprint"] == encoder.fingerprint()
            for utt, tok, feat in zip(*(table.column(c).to_pylist() for c in ("utt", *text_columns.COLUMNS))):
                if tok is None:
                    assert feat is None and utt in info["skipped"]
                    continue
                assert tok == encoder.tokenize(by_utt[utt]["text"]) and tok[0] == 0 and tok[-1] == 2
                ids.append(tok)
                stored.append(np.asarray(feat, np.float16).reshape(len(tok), 32))
    assert len(ids) == 18
    from sovits2_jax.models import xlm_roberta

    for got, want in zip(stored, xlm_roberta.encode(encoder.model, ids, batch_size=8)):
        # the column stores float16: equal up to float16 rounding (2**-10 relative), not a parity tolerance
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    skipped = (prepared["root"] / "train" / stage.SKIP_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == [prepared["rows"][i]["utt"] for i in (EMPTY, LONG)]
    assert "empty transcript" in skipped[0] and "longer than the text encoder's positions" in skipped[1]
    assert (prepared["root"] / "dev" / stage.SKIP_FILE).read_text() == ""


def test_rerun_skips_finished_shards_and_another_encoder_rewrites(prepared, tmp_path):
    import shutil

    from flax import nnx

    shutil.copytree(prepared["root"] / "train", tmp_path / "train")
    data_list = tmp_path / "train" / "data.list"
    data_list.write_text(data_list.read_text().replace(str(prepared["root"]), str(tmp_path)))
    paths = data_list.read_text().split()
    done = {p: pq.read_table(p) for p in paths}
    encoder = te.load(prepared["encoder"])
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    os.remove(tmp_path / "train" / stage.SKIP_FILE)
    skips = stage.add_text_features([str(data_list)], encoder, batch_size=4)[str(data_list)]
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes  # nothing rewritten
    assert len(skips) == 2 and (tmp_path / "train" / stage.SKIP_FILE).read_text().count("\n") == 2  # still listed
    # a half-finished run (one shard as it was before the stage) finishes that shard alone, as the first run did
    pq.write_table(prepared["before"][paths[0].replace(str(tmp_path), str(prepared["root"]))], paths[0])
    stage.add_text_features([str(data_list)], encoder, batch_size=4)
    assert [os.stat(p).st_mtime_ns for p in paths[1:]] == mtimes[1:]
    again = pq.read_table(paths[0])
    assert again.schema.metadata == done[paths[0]].schema.metadata
    assert again.drop_columns([text_columns.FEATURE]).equals(done[paths[0]].drop_columns([text_columns.FEATURE]))
    # the CLI ran under the tests' faster XLA settings: the same features up to float16 rounding
    np.testing.assert_allclose(_all_features(again), _all_features(done[paths[0]]), atol=2e-3)
    # another encoder (same tokenizer, other weights) rewrites every shard
    other = te.TextEncoder(type(encoder.model)(encoder.config, rngs=nnx.Rngs(1)), encoder.tokenizer, tmp_path)
    stage.add_text_features([str(data_list)], other)
    assert all(text_columns.read_info(p)["fingerprint"] == other.fingerprint() != encoder.fingerprint() for p in paths)
    new = pq.read_table(paths[0])
    assert new.column(text_columns.TOKEN).equals(done[paths[0]].column(text_columns.TOKEN))
    assert not new.column(text_columns.FEATURE).equals(done[paths[0]].column(text_columns.FEATURE))


def _data_config(prepared, **extra):
    from sovits2_jax.configs import data as data_configs

    cfg = data_configs.get_config("gpt_sovits2").data
    values = dict(worker_count=0, num_epochs=1, read_threads=1, bucket_lengths=[400], max_frames_in_batch=1600,
                  text_source="bge_m3", text_feature_dim=32)  # fmt: skip
    values.update(extra)
    for k, v in values.items():
        setattr(cfg, k, v)
    return cfg


def test_data_task_aligns_features_with_text_positions(prepared):
    from sovits2_jax.data import pipeline

    stored = {}
    for table in _tables(prepared["train"]).values():
        for utt, tok, feat in zip(*(table.column(c).to_pylist() for c in ("utt", *text_columns.COLUMNS))):
            if tok is not None:
                stored[utt] = (tok, np.asarray(feat, np.float16).reshape(len(tok), 32))
    batches = pipeline.make_batches(_data_config(prepared), data_list=prepared["train"], process_index=0,
                                    process_count=1)  # fmt: skip
    targets = set()
    for batch in batches:
        kinds, feats = batch["kinds"], batch["text_features"]
        assert feats.dtype == np.float16 and feats.shape == (*kinds.shape, 32)
        assert not np.any(feats[kinds != TEXT]) and np.all(np.abs(feats[kinds == TEXT]).sum(-1) > 0)
        for b, utts in enumerate(batches.last_meta["_utts"]):
            for s, utt in enumerate(utts, start=1):
                pos = np.flatnonzero((batch["segment_ids"][b] == s) & (kinds[b] == TEXT))
                last = pos[batch["text_segments"][b, pos] == batch["text_segments"][b, pos].max()]
                tok, want = stored[utt]
                np.testing.assert_array_equal(batch["ids"][b, last], tok)
                np.testing.assert_array_equal(feats[b, last], want)
                targets.add(utt)
    rows = prepared["rows"]
    assert targets == set(stored) and not {rows[EMPTY]["utt"], rows[LONG]["utt"]} & targets
    assert batches.skipped["too few text tokens"] == 2  # the null rows, known from the index
    with pytest.raises(ValueError, match=r"config\.data\.text_feature_dim=16"):
        pipeline.build_dataset(_data_config(prepared, text_feature_dim=16), data_list=prepared["train"],
                               process_index=0, process_count=1)  # fmt: skip
    with pytest.raises(ValueError, match=r"run python -m sovits2_jax\.data\.prep\.text_features"):
        unprepared = synthetic.write_corpus(str(prepared["root"] / "plain"), rows[:4], rows_per_file=4)
        pipeline.build_dataset(_data_config(prepared), data_list=unprepared, process_index=0, process_count=1)


def _ar_config(prepared, **overrides):
    from sovits2_jax.configs import gpt_sovits2

    config = gpt_sovits2.get_config("ar_tiny")
    config.data.update({"text_source": "bge_m3", "text_encoder": str(prepared["encoder"]), **overrides})
    return config


def test_ar_sizes_come_from_the_text_encoder_and_validation_names_the_key(prepared, tmp_path):
    from sovits2_jax.train.validate import adopt_init, validate
    from sovits2_jax.validation import ConfigError

    vocab, width = te.sizes(prepared["encoder"])
    config = _ar_config(prepared)
    validate(adopt_init(config))
    sizes = (config.model.backbone.vocab_size, config.model.text_feature_dim, config.data.text_feature_dim)
    assert sizes == (vocab, width, width)
    config = _ar_config(prepared, text_feature_dim=width)
    config.model.text_feature_dim = width
    with pytest.raises(ConfigError, match=rf"config\.model\.backbone\.vocab_size=151936 .* tokenizer gives {vocab}"):
        validate(config)  # not adopted: the preset's BPE table
    config.model.backbone.vocab_size = vocab
    config.model.text_feature_dim = 16
    with pytest.raises(ConfigError, match=rf"config\.model\.text_feature_dim=16 .* width {width}"):
        validate(config)
    with pytest.raises(ConfigError, match=r"--config\.model\.text_feature_dim=16 contradicts config\.data"):
        adopt_init(config, {"model.text_feature_dim": 16})
    for bad in ("", str(tmp_path)):
        with pytest.raises(ConfigError, match=r"config\.data\.text_encoder"):
            validate(adopt_init(_ar_config(prepared, text_encoder=bad, text_feature_dim=width)))


def test_ar_trains_on_text_features(prepared, tmp_path):
    overrides = {"data.train_list": prepared["train"], "data.dev_list": prepared["dev"],
                 "data.text_source": "bge_m3", "data.text_encoder": prepared["encoder"], "train.num_steps": 3,
                 "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 3}  # fmt: skip
    workdir = tmp_path / "ar"
    proc = th.run(workdir, [f"--config.{k}={v}" for k, v in overrides.items()], config="configs/gpt_sovits2.py:ar_tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in th.read_metrics(workdir) if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(math.isfinite(r["train/loss"]) and r["train/skipped_steps"] == 0 for r in train)
    import orbax.checkpoint as ocp

    params = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "3" / "params")["model"]
    assert params["llm"]["model"]["embed_tokens"]["embedding"].shape[0] == te.sizes(prepared["encoder"])[0]
    assert params["text_feature_proj"]["hidden"]["kernel"].shape[0] == 32


# ------------------------------------------------------------------------------------------------- inference


class CharTokenizer:
    """The VITS's text ids: characters -> 1..63 (the tiny VITS embeds 64 symbols)."""

    def encode(self, text: str) -> list[int]:
        return [1 + ord(c) % 63 for c in text]


def _reference(seed: int, text: str):
    from sovits2_jax.infer.gpt_sovits2.tts import Reference

    rng = np.random.default_rng(seed)
    t = np.arange(6400) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return Reference(wav.astype(np.float32), 16000, text, rng.integers(0, 64, 10).tolist())


def _save(path, module, config, fmt):
    from flax import nnx

    from sovits2_jax.convert.checkpoint import save_checkpoint
    from sovits2_jax.convert.mapping import flatten, unflatten

    flat = {k: np.asarray(v) for k, v in flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param))).items()}
    save_checkpoint(path, unflatten(flat), {"format": fmt, "config": config.to_dict()})


def _model_dir(prepared, tmp_path, **vits_changes):
    """A random-init GPT-SoVITS2 model directory (tiny AR on the encoder's ids and features, tiny VITS with
    ``vits_changes``, the prepared text encoder) loaded with greedy sampling: (synth, ar, vits, settings, backbone)."""
    import shutil

    from flax import nnx

    from sovits2_jax.configs.vits2 import tiny
    from sovits2_jax.infer.gpt_sovits2 import tts
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.models import speech_lm as slm
    from sovits2_jax.models.qwen2 import Qwen2Config
    from sovits2_jax.models.vits2 import SynthesizerTrn

    vocab, width = te.sizes(prepared["encoder"])
    backbone = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    ar = slm.SpeechLM(slm.SpeechLMConfig(backbone=backbone, speech_token_size=64, layout="gpt_sovits2",
                                         text_feature_dim=width), rngs=nnx.Rngs(0))  # fmt: skip
    vits = SynthesizerTrn(tiny().replace(with_posterior=False, **vits_changes), rngs=nnx.Rngs(1))
    model_dir = tmp_path / "model"
    _save(model_dir / "ar", ar, ar.config, "cosyvoice2.llm")
    _save(model_dir / "vits", vits, vits.cfg, "gpt_sovits")
    shutil.copytree(prepared["encoder"], model_dir / tts.TEXT_ENCODER_DIR)
    settings = tts.SynthesisSettings(sampling=SamplingConfig(method="greedy"), min_ratio=1.0, max_ratio=3.0)
    synth = tts.GptSoVITS2.from_pretrained(model_dir, tokenizer=CharTokenizer(), settings=settings)
    return synth, ar, vits, settings, backbone


def test_inference_reads_the_model_directorys_text_encoder(prepared, tmp_path):
    from flax import nnx

    from sovits2_jax.infer import generate as gen
    from sovits2_jax.infer.gpt_sovits2 import tts
    from sovits2_jax.models import speech_lm as slm

    synth, ar, vits, settings, backbone = _model_dir(prepared, tmp_path)
    width = te.sizes(prepared["encoder"])[1]
    assert synth.text_encoder is not None and synth.text_encoder.hidden_size == width

    refs = [_reference(0, "the quick brown fox"), _reference(1, "seven bright stars")]
    texts = ["a lazy dog jumps", "far away"]
    wav = synth.synthesize(texts[0], refs, noise_scale=0.0)
    assert wav.dtype == np.float32 and wav.size > 0 and np.isfinite(wav).all()
    rows, inputs = synth.speech_tokens(texts, refs)
    prompt, n = inputs["prompt"], inputs["prompt_len"]
    encoder = synth.text_encoder
    assert inputs["ar_text_ids"] == [encoder.tokenize(t) for t in texts]
    # each text block of the prompt carries its text's features; every other position carries zeros
    want = encoder.features([encoder.tokenize(r.text) for r in refs] + [encoder.tokenize(texts[1])])
    kinds, feats = prompt["kinds"][1, : n[1]], prompt["text_features"][1, : n[1]]
    # inference rounds features to float16 as the training data stores them
    np.testing.assert_allclose(feats[kinds == TEXT], np.concatenate(want), atol=1e-3)
    assert not np.any(feats[kinds != TEXT])
    # the AR uses them: other encoder weights (same tokenizer) change its logits and its tokens
    logits = gen.decode_logits(synth.ar_graphdef, synth.ar_params, prompt, n, np.asarray([r[:4] for r in rows]))
    zeroed = {**prompt, "text_features": np.zeros_like(prompt["text_features"])}
    assert np.abs(gen.decode_logits(synth.ar_graphdef, synth.ar_params, zeroed, n,
                                    np.asarray([r[:4] for r in rows])) - logits).max() > 1e-3  # fmt: skip
    other = te.TextEncoder(type(encoder.model)(encoder.config, rngs=nnx.Rngs(5)), encoder.tokenizer, encoder.source)
    synth_other = tts.GptSoVITS2.from_parts(ar, vits, CharTokenizer(), settings, text_encoder=other)
    _, inputs_other = synth_other.speech_tokens(texts, refs)
    logits_other = gen.decode_logits(synth.ar_graphdef, synth.ar_params, inputs_other["prompt"], n,
                                     np.asarray([r[:4] for r in rows]))  # fmt: skip
    assert np.abs(logits_other - logits).max() > 1e-3
    # a text encoder of another width than the AR reads is refused
    with pytest.raises(tts.SynthesisError, match="text features of width 16"):
        ar16 = slm.SpeechLM(slm.SpeechLMConfig(backbone=backbone, speech_token_size=64, layout="gpt_sovits2",
                                               text_feature_dim=16), rngs=nnx.Rngs(0))  # fmt: skip
        tts.GptSoVITS2.from_parts(ar16, vits, CharTokenizer(), settings, text_encoder=encoder)


# ------------------------------------------------------------------------------------------------- the VITS2


def _vits_overrides(prepared, **extra):
    return {"data.train_list": prepared["train"], "data.dev_list": prepared["dev"], "data.text_source": "bge_m3",
            "data.text_encoder": prepared["encoder"], **extra}  # fmt: skip


def test_vits_data_task_gives_the_text_encoders_features(prepared):
    from sovits2_jax.configs import gpt_sovits2
    from sovits2_jax.data import pipeline

    stored = {}
    for table in _tables(prepared["train"]).values():
        for utt, tok, feat in zip(*(table.column(c).to_pylist() for c in ("utt", *text_columns.COLUMNS))):
            if tok is not None:
                stored[utt] = np.asarray(feat, np.float16).reshape(len(tok), 32).astype(np.float32)
    cfg = gpt_sovits2.get_config("vits_tiny").data
    cfg.update(worker_count=0, num_epochs=1, read_threads=1, text_source="bge_m3", text_feature_dim=32)
    batches = pipeline.make_batches(cfg, data_list=prepared["train"], process_index=0, process_count=1)
    seen = set()
    for batch in batches:
        text, lengths = batch["text"], batch["text_len"]
        assert text.dtype == np.float32 and text.shape == (len(lengths), cfg.text_length, 32)
        for b, utt in enumerate(batches.last_meta["_utts"]):
            if not batch["valid"][b]:
                continue
            np.testing.assert_array_equal(text[b, : lengths[b]], stored[utt])
            assert not np.any(text[b, lengths[b] :])
            seen.add(utt)
    rows = prepared["rows"]
    assert seen and seen <= set(stored) and not {rows[EMPTY]["utt"], rows[LONG]["utt"]} & seen
    with pytest.raises(ValueError, match=r"run python -m sovits2_jax\.data\.prep\.text_features"):
        plain = synthetic.write_corpus(str(prepared["root"] / "plain_vits"), rows[:4], rows_per_file=4)
        pipeline.build_dataset(cfg, data_list=plain, process_index=0, process_count=1)


def test_vits_reads_features_once_told_the_encoder_and_refuses_a_mismatch(prepared):
    from sovits2_jax.configs import gpt_sovits2
    from sovits2_jax.train.validate import adopt_init, validate
    from sovits2_jax.validation import ConfigError

    config = gpt_sovits2.get_config("vits_tiny")
    config.data.update(text_source="bge_m3", text_encoder=str(prepared["encoder"]), max_frames_in_batch=320)
    validate(adopt_init(config))
    got = (config.model.text_input, config.model.text_feature_dim, config.data.text_feature_dim)
    assert got == ("features", 32, 32)
    config.model.text_feature_dim = 16
    with pytest.raises(ConfigError, match=r"config\.model\.text_feature_dim=16 .* width 32"):
        validate(config)
    bpe = gpt_sovits2.get_config("vits_tiny")
    bpe.data.max_frames_in_batch = 320
    bpe.model.text_input = "features"
    with pytest.raises(ConfigError, match=r"config\.model\.text_input='features'.*text_source='bge_m3'"):
        validate(adopt_init(bpe))


def test_vits_trains_on_text_features(prepared, tmp_path):
    overrides = _vits_overrides(prepared, **{"train.num_steps": 2, "train.log_every": 1, "train.eval_every": 0,
                                             "train.checkpoint_every": 2})  # fmt: skip
    workdir = tmp_path / "vits"
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = th.run(workdir, args, config="configs/gpt_sovits2.py:vits_tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in th.read_metrics(workdir) if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all(math.isfinite(r["train/loss"]) for r in train)
    import orbax.checkpoint as ocp

    params = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "2" / "params")["generator"]
    assert params["enc_p"]["text_embedding"]["fc1"]["kernel"].shape[0] == 32


def test_inference_gives_a_feature_reading_vits_the_encoders_features(prepared, tmp_path):
    from sovits2_jax.infer.gpt_sovits2 import tts

    width = te.sizes(prepared["encoder"])[1]
    synth, ar, vits, settings, _ = _model_dir(prepared, tmp_path, text_input="features", text_feature_dim=width)
    refs = [_reference(0, "the quick brown fox")]
    texts = ["a lazy dog jumps", "far away"]
    rows, inputs = synth.speech_tokens(texts, refs)
    want = synth.text_encoder.features([synth.text_encoder.tokenize(t) for t in texts])
    for got, feats in zip(inputs["vits_text"], want):  # rounded to float16, as the training data stores them
        np.testing.assert_array_equal(got, np.asarray(feats).astype(np.float16).astype(np.float32))
    wav = synth.vocode(rows[0], inputs["vits_text"][0], inputs["refers"], noise_scale=0.0)
    assert wav.size > 0 and np.isfinite(wav).all()
    zeroed = synth.vocode(rows[0], np.zeros_like(inputs["vits_text"][0]), inputs["refers"], noise_scale=0.0)
    # the decoder reads them: the same call is bit-identical, zeroed features move the (random-init) output
    again = synth.vocode(rows[0], inputs["vits_text"][0], inputs["refers"], noise_scale=0.0)
    np.testing.assert_array_equal(again, wav)
    assert np.abs(zeroed - wav).max() > 1e-6
    with pytest.raises(tts.SynthesisError, match=r"text features \[tokens, 32\]"):
        synth.vocode(rows[0], [1, 2, 3], inputs["refers"])
    with pytest.raises(tts.SynthesisError, match="reads text features of width 32: it needs the text encoder"):
        tts.GptSoVITS2.from_parts(ar, vits, CharTokenizer(), settings)
