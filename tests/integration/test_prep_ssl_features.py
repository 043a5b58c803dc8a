"""The SSL-feature stage (``data/prep/ssl_features.py``, command ``python -m sovits2_jax.data.prep.ssl_features``) on a
small synthetic corpus with a random tiny HuBERT: the new columns hold each row's features as the encoder gives them
for that row alone (float16, 50 frames/s), every existing column and the row groups are kept, unusable audio is
skipped, counted and listed, a rerun keeps finished shards, and ``--ssl_model`` loads an Orbax checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
from flax import nnx

from sovits2_jax.audio.io import load_audio
from sovits2_jax.data import source
from sovits2_jax.data.prep import ssl_features, synthetic
from sovits2_jax.data.prep import ssl_features as command
from sovits2_jax.models import hubert


@pytest.fixture(scope="module")
def encoder():
    return command.load_encoder("", seed=3)


def make_corpus(root) -> str:
    """Two shards of 4 rows (24 kHz, 0.5-1.5 s); shard 0 with row groups of 2 rows; two unusable rows."""
    rows = synthetic.make_rows(8, num_speakers=2, min_seconds=0.5, max_seconds=1.5, seed=7)
    rows[2]["audio_data"] = b"RIFF not really a wav file"
    rows[5]["audio_data"] = synthetic.wav_bytes(np.zeros(300, np.float32), 24000)  # 200 samples at 16 kHz
    data_list = synthetic.write_corpus(str(root), rows, rows_per_file=4)
    first = source.read_data_list(data_list)[0]
    pq.write_table(pq.read_table(first), first, row_group_size=2)
    return data_list


def test_features_are_added_skips_listed_and_a_rerun_resumes(tmp_path, encoder, caplog):
    model, name = encoder
    assert "random-init tiny HuBERT" in name
    data_list = make_corpus(tmp_path / "corpus")
    shards = source.read_data_list(data_list)
    before = [pq.read_table(p) for p in shards]
    calls = []

    def extract(wavs):
        calls.append(len(wavs))
        return hubert.BucketedExtractor(model, batch_size=2)(wavs)

    dim, min_samples = model.config.hidden_size, model.config.min_samples
    with caplog.at_level(logging.INFO, logger="sovits2_jax"):
        skips = ssl_features.add_ssl_features(data_list, extract, dim=dim, min_samples=min_samples, model_name=name)
    assert dim == 32 and calls == [3, 3]  # one unusable row per shard never reaches the encoder
    assert "skipped 2 (1 too short, 1 unreadable audio)" in caplog.text and "6 utterances in 2 shards" in caplog.text
    listed = (tmp_path / "corpus" / ssl_features.SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [before[0]["utt"][2].as_py(), before[1]["utt"][1].as_py()]
    assert len(skips) == 2

    first_run = {}
    for path, old in zip(shards, before):
        new = pq.read_table(path)
        assert new.column_names == [*old.column_names, "ssl_feature", "ssl_feature_dim"]
        assert new.select(old.column_names).equals(old)  # existing columns untouched
        assert str(new.schema.field("ssl_feature").type) == "list<element: halffloat>"
        assert pq.ParquetFile(path).metadata.row_group(0).num_rows == (2 if path == shards[0] else 4)
        info = ssl_features.written_info(path)
        assert (info["dim"], info["dtype"], info["frame_rate"], info["model"]) == (32, "float16", 50, name)
        checked = False
        for row in new.to_pylist():
            if row["utt"] in info["skipped"]:
                assert row["ssl_feature"] is None and row["ssl_feature_dim"] is None
                continue
            wav, _ = load_audio(row["audio_data"], target_sr=16000)
            got = np.asarray(row["ssl_feature"], np.float32).reshape(-1, row["ssl_feature_dim"])
            assert got.shape == (hubert.output_lengths(model.config, len(wav)), 32)
            assert abs(len(got) - len(wav) / 320) < 1.5  # 50 frames per second
            if not checked:  # one row per shard through the encoder on its own (eager: slow)
                alone = np.asarray(model(wav[None]))[0].astype(np.float16).astype(np.float32)
                np.testing.assert_allclose(got, alone, rtol=2e-3, atol=2e-3)
                checked = True
        first_run[path] = new

    # a run killed after shard 0: shard 1 back to its original file, then rerun: only shard 1 is computed
    pq.write_table(before[1], shards[1])
    calls.clear()
    mtime = (tmp_path / "corpus").joinpath(shards[0]).stat().st_mtime_ns
    ssl_features.add_ssl_features(data_list, extract, dim=dim, min_samples=min_samples, model_name=name)
    assert calls == [3] and (tmp_path / "corpus").joinpath(shards[0]).stat().st_mtime_ns == mtime
    for path in shards:
        assert pq.read_table(path).equals(first_run[path])
    assert (tmp_path / "corpus" / ssl_features.SKIPPED_FILE).read_text().splitlines() == listed
    with pytest.raises(ValueError, match="holds 32-d features"):
        ssl_features.add_ssl_features(data_list, extract, dim=16, min_samples=min_samples, model_name="other")


def test_the_command_loads_an_orbax_encoder(tmp_path, encoder):
    from sovits2_jax.convert import checkpoint as ckpt

    model, _ = encoder
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    src = ckpt.save_checkpoint(tmp_path / "hubert", params, {"format": "hf_hubert", "config": model.config.to_dict()})
    loaded, name = command.load_encoder(str(src))
    assert name == str(src) and loaded.config == model.config
    wav = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32) * 0.1
    np.testing.assert_array_equal(np.asarray(loaded(wav)), np.asarray(model(wav)))
    data_list = make_corpus(tmp_path / "corpus")
    skips = command.extract_corpus(data_list, loaded, name, batch_size=2, column="hubert_features")
    assert len(skips) == 2
    table = pq.read_table(source.read_data_list(data_list)[1])
    assert table.column("hubert_features_dim").to_pylist() == [32, None, 32, 32]
    assert ssl_features.written_info(source.read_data_list(data_list)[1], "hubert_features")["model"] == str(src)
    from sovits2_jax import cli

    with pytest.raises(cli.Error, match="--ssl_model"):
        command.load_encoder(str(tmp_path / "nothing_here"))


def test_save_to_writes_the_encoder_synthesis_loads(tmp_path, encoder):
    """``save_encoder`` (``--save_to``) writes the encoder that ran; GPT-SoVITS2 synthesis's ``load_ssl_encoder``
    reads it back and gives the same features as the encoder's own bucketed extraction."""
    from sovits2_jax.infer.gpt_sovits2 import tts

    model, _ = encoder
    command.save_encoder(model, str(tmp_path / "hubert"))
    wav = np.random.default_rng(1).standard_normal(12000).astype(np.float32) * 0.1
    got = tts.load_ssl_encoder(tmp_path / "hubert")([wav])[0]
    np.testing.assert_array_equal(got, hubert.BucketedExtractor(model, batch_size=4)([wav])[0])
