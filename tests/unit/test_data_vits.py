"""The ``vits`` data task: frame-aligned crops (spectrogram, waveform, S3 tokens or SSL frames from one offset),
resampled to the model's rate, and a reference spectrogram from another utterance of the same speaker."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sovits2_jax.audio.spectrogram import linear_spectrogram
from sovits2_jax.configs import gpt_sovits2, vits2
from sovits2_jax.data import pipeline, source, steps
from sovits2_jax.data.tasks.vits import linear_spectrogram_np


def _data_cfg(config, data_list):
    cfg = config.data
    cfg.worker_count, cfg.num_epochs, cfg.data_list = 0, 1, data_list
    return cfg


def _source_audio(rows, sample_rate):
    """Each utterance's audio as the task decodes and resamples it, by utt."""
    out = {}
    for r in rows:
        s = steps.decode_audio({"audio_data": r["audio_data"]})
        out[r["utt"]] = steps.resample(s, sample_rate=sample_rate, min_sample_rate=16000)["speech"]
    return out


def _crop_offset(full, wav, unit):
    """The unit offset k with full[k * unit : k * unit + len(wav)] == wav (exactly one)."""
    hits = [k for k in range(len(full) // unit + 1) if np.array_equal(full[k * unit : k * unit + len(wav)], wav)]
    assert len(hits) == 1, f"crop found at unit offsets {hits}"
    return hits[0]


def _batches(cfg):
    it = pipeline.make_batches(cfg, process_index=0, process_count=1)
    for batch in it:
        yield batch, it.last_meta["_utts"]


def test_numpy_spectrogram_equals_the_jax_one():
    wav = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.3
    ours = linear_spectrogram_np(wav, n_fft=2048, hop_size=640, win_size=2048)
    ref = np.asarray(linear_spectrogram(wav, n_fft=2048, hop_size=640, win_size=2048))[0]
    assert ours.shape == ref.shape == (50, 1025)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_crops_are_frame_aligned_and_references_are_other_same_speaker_utterances(tiny_corpus):
    config = gpt_sovits2.get_config("vits_tiny")
    cfg = _data_cfg(config, tiny_corpus.train_list)
    model = config.model
    hop, unit = cfg.spectrogram.hop_size, cfg.unit_frames * cfg.spectrogram.hop_size
    rows = {r["utt"]: r for r in tiny_corpus.rows}
    audio = _source_audio(tiny_corpus.rows, cfg.sample_rate)
    full_specs = {u: linear_spectrogram_np(a, **cfg.spectrogram.to_dict()) for u, a in audio.items()}
    crop = cfg.bucket_lengths[0]
    seen, refs_of = 0, {}
    for batch, utts in _batches(cfg):
        b = batch["valid"].shape[0]
        assert batch["spec"].shape == (b, crop, model.n_fft // 2 + 1)
        assert batch["wav"].shape == (b, crop * hop) and batch["codes"].shape == (b, crop // cfg.unit_frames)
        assert batch["refer"].shape == (b, cfg.ref_frames, model.n_fft // 2 + 1)
        assert batch["text"].shape == (b, cfg.text_length)
        for i in np.flatnonzero(batch["valid"]):
            utt, n = utts[i], int(batch["spec_len"][i])
            assert n * hop == batch["wav_len"][i] and n == cfg.unit_frames * batch["codes_len"][i]
            wav = batch["wav"][i, : n * hop]
            np.testing.assert_allclose(batch["spec"][i, :n], np.asarray(linear_spectrogram(wav, n_fft=model.n_fft,
                                       hop_size=hop, win_size=model.win_length))[0], rtol=1e-4, atol=1e-4)  # fmt: skip
            k = _crop_offset(audio[utt], wav, unit)  # the crop starts on a token boundary ...
            tokens = np.asarray(rows[utt]["speech_token"])
            np.testing.assert_array_equal(batch["codes"][i, : n // cfg.unit_frames], tokens[k : k + n // 2])  # ... its
            assert not batch["spec"][i, n:].any() and not batch["wav"][i, n * hop :].any()
            # the reference is a crop of another utterance's spectrogram, of the same speaker
            r = int(batch["refer_len"][i])
            ref = batch["refer"][i, :r]
            found = [u for u, sp in full_specs.items() if any(
                np.array_equal(sp[j : j + r], ref) for j in range(len(sp) - r + 1))]  # fmt: skip
            assert found and utt not in found, (utt, found)
            assert {rows[u]["spk"] for u in found} == {rows[utt]["spk"]}
            refs_of.setdefault(utt, set()).update(found)
            seen += 1
    assert seen >= len(rows) - 4  # full batches of 4: at most one partial batch dropped
    assert len(set().union(*refs_of.values())) > 4  # references are drawn, not one fixed utterance per speaker


@pytest.fixture(scope="module")
def ssl_corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus plus GPT-SoVITS v1/v2 columns: random 50 Hz SSL features and phoneme ids."""
    out = tmp_path_factory.mktemp("ssl_corpus")
    rng = np.random.default_rng(0)
    lines = []
    for i, path in enumerate(source.read_data_list(tiny_corpus.train_list)):
        table = pq.read_table(path)
        seconds = [len(t) / 25 for t in table.column("speech_token").to_pylist()]
        ssl = [rng.standard_normal(int(s * 50) * 8).astype(np.float32) for s in seconds]
        phones = [rng.integers(0, 64, 5 + int(s * 4)).astype(np.int32) for s in seconds]
        table = table.append_column("ssl_feature", pa.array(ssl, pa.list_(pa.float32())))
        table = table.append_column("phone_ids", pa.array(phones, pa.list_(pa.int32())))
        pq.write_table(table, out / f"part{i}.parquet")
        lines.append(str(out / f"part{i}.parquet"))
    (out / "data.list").write_text("\n".join(lines) + "\n")
    return out / "data.list"


def test_ssl_features_are_cropped_with_the_audio(ssl_corpus, tiny_corpus):
    config = vits2.get_config("v2")
    cfg = _data_cfg(config, str(ssl_corpus))
    cfg.ssl_dim, cfg.bucket_lengths, cfg.max_frames_in_batch = 8, [60], 240
    hop, unit = cfg.spectrogram.hop_size, cfg.unit_frames * cfg.spectrogram.hop_size
    ssl_of, seen = {}, 0
    for path in source.read_data_list(str(ssl_corpus)):
        t = pq.read_table(path, columns=["utt", "ssl_feature"]).to_pylist()
        ssl_of |= {r["utt"]: np.asarray(r["ssl_feature"], np.float32).reshape(-1, 8) for r in t}
    audio = _source_audio(tiny_corpus.rows, cfg.sample_rate)
    for batch, utts in _batches(cfg):
        assert "codes" not in batch and "refer" not in batch  # v1/v2: codes from the SSL features, self-reference
        assert batch["ssl"].shape == (batch["valid"].shape[0], 60, 8) and cfg.sample_rate == 32000
        for i in np.flatnonzero(batch["valid"]):
            n = int(batch["spec_len"][i])
            assert batch["ssl_len"][i] == n and batch["wav_len"][i] == n * hop
            k = _crop_offset(audio[utts[i]], batch["wav"][i, : n * hop], unit)
            np.testing.assert_array_equal(batch["ssl"][i, :n], ssl_of[utts[i]][k * 2 : k * 2 + n])
            assert batch["text"][i, : batch["text_len"][i]].max() < 64  # the phoneme ids column, not BPE
            seen += 1
    assert seen > 0
