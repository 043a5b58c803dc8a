"""Stages 0-3 on a tiny built-in corpus with bad inputs: Kaldi files, ONNX embeddings and tokens, Parquet."""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.audio.fbank import campplus_features
from sovits2_jax.audio.io import load_audio
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
from sovits2_jax.data.prep import corpus, feature_store, kaldi, onnx_extract, parquet_writer


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory, torch_available):
    from sovits2_jax.parity.reference_models import export_campplus_like, export_s3_tokenizer

    root = tmp_path_factory.mktemp("onnx_models")
    return {
        "campplus": export_campplus_like(str(root / "campplus_like.onnx")),
        "s3v2": export_s3_tokenizer(str(root / "s3_v2.onnx"), version="v2"),
        "s3v1": export_s3_tokenizer(str(root / "s3_v1.onnx"), version="v1"),
    }


def _add_bad_inputs(root):
    """A corrupt wav, an empty transcript, a zero-length file, a 40 s file and a speaker folder without audio."""
    good = sorted(root.glob("1000/10/*.wav"))[0]
    audio, sr = sf.read(good)

    def put(utt, wav_bytes=None, text="Some words here."):
        spk, chapter = utt.split("_")[:2]
        d = root / spk / chapter
        d.mkdir(parents=True, exist_ok=True)
        if wav_bytes is None:
            shutil.copy(good, d / f"{utt}.wav")
        else:
            (d / f"{utt}.wav").write_bytes(wav_bytes)
        (d / f"{utt}.normalized.txt").write_text(text, encoding="utf-8")
        return d / f"{utt}.wav"

    put("1000_10_000090_000000", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00garbage")
    put("1001_10_000091_000000", text="   ")
    put("1002_10_000092_000000", b"")
    long_path = put("1003_10_000093_000000")
    sf.write(long_path, np.tile(audio, int(np.ceil(40 * sr / len(audio))))[: 40 * sr], sr, subtype="PCM_16")
    (root / "1999" / "10").mkdir(parents=True)
    (root / "1999" / "10" / "1999_10_000000_000000.normalized.txt").write_text("no audio", encoding="utf-8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, onnx_models):
    root = tmp_path_factory.mktemp("prep")
    src = root / "corpus"
    corpus.build_corpus(str(src), utterances=16, num_speakers=4, langs=["en", "de"], seed=1)
    _add_bad_inputs(src)
    data_dir = str(root / "data")
    _, kaldi_skips = kaldi.prepare(str(src), data_dir)
    emb_skips = onnx_extract.extract_embeddings(data_dir, onnx_models["campplus"], workers=2)
    tok_skips = onnx_extract.extract_speech_tokens(data_dir, onnx_models["s3v2"], workers=2, batch_size=3)
    return root, data_dir, kaldi_skips, emb_skips, tok_skips


def test_stage0_skips_bad_inputs_and_keeps_the_rest(prepared):
    _, data_dir, kaldi_skips, _, _ = prepared
    assert kaldi_skips.counts == {
        "corrupt audio": 1, "empty transcript": 1, "zero-length audio file": 1, "speaker folder without audio": 1,
    }  # fmt: skip
    data = kaldi.read_kaldi_dir(data_dir)
    assert len(data) == 17 and "1003_10_000093_000000" in data.utt2wav  # the 40 s file is still a valid utterance
    assert set(data.spk2utt) == {"1000", "1001", "1002", "1003"}


def test_embeddings_equal_onnxruntime_by_hand(prepared, onnx_models):
    _, data_dir, _, emb_skips, _ = prepared
    assert len(emb_skips) == 0
    data = kaldi.read_kaldi_dir(data_dir)
    utt2emb = feature_store.load_vectors(os.path.join(data_dir, "utt2embedding.npz"))
    spk2emb = feature_store.load_vectors(os.path.join(data_dir, "spk2embedding.npz"))
    assert list(utt2emb) == list(data.utt2wav)
    session = onnx_extract.make_session(onnx_models["campplus"])
    for utt in list(data.utt2wav)[::4]:
        feats = campplus_features(load_audio(data.utt2wav[utt], target_sr=16000)[0])
        by_hand = session.run(None, {"input": feats[None]})[0].reshape(-1)
        assert by_hand.shape == (192,)
        np.testing.assert_allclose(utt2emb[utt], by_hand, rtol=0, atol=1e-6)
    for spk, utts in data.spk2utt.items():
        np.testing.assert_allclose(spk2emb[spk], np.mean([utt2emb[u] for u in utts], axis=0), rtol=1e-6, atol=1e-7)


def test_batched_tokens_equal_onnxruntime_by_hand(prepared, onnx_models):
    _, data_dir, _, _, tok_skips = prepared
    assert tok_skips.counts == {"longer than 30 s": 1} and tok_skips.items[0][0] == "1003_10_000093_000000"
    with open(os.path.join(data_dir, "skipped_speech_token.tsv"), encoding="utf-8") as f:
        assert f.read().startswith("1003_10_000093_000000\tlonger than 30 s: 40.0 s")
    data = kaldi.read_kaldi_dir(data_dir)
    tokens = feature_store.load_sequences(os.path.join(data_dir, "utt2speech_token.npz"))
    assert len(tokens) == 16
    session = onnx_extract.make_session(onnx_models["s3v2"])
    for utt, toks in tokens.items():
        mel = log_mel_spectrogram(load_audio(data.utt2wav[utt], target_sr=16000)[0])
        by_hand = session.run(None, {"feats": mel[None], "feats_length": np.array([mel.shape[1]], np.int32)})[0]
        assert len(toks) == -(-mel.shape[1] // 4)  # 25 Hz
        np.testing.assert_array_equal(toks, by_hand.reshape(-1))


def test_v1_tokenizer_signature_runs_at_50hz(prepared, onnx_models, tmp_path):
    _, data_dir, _, _, _ = prepared
    work = tmp_path / "v1"
    shutil.copytree(data_dir, work)
    onnx_extract.extract_speech_tokens(str(work), onnx_models["s3v1"], workers=0, batch_size=4)
    tokens = feature_store.load_sequences(str(work / "utt2speech_token.npz"))
    data = kaldi.read_kaldi_dir(str(work))
    session = onnx_extract.make_session(onnx_models["s3v1"])
    for utt in list(tokens)[:4]:
        mel = log_mel_spectrogram(load_audio(data.utt2wav[utt], target_sr=16000)[0])
        by_hand = session.run(None, {"feats": mel[None], "feats_length": np.array([mel.shape[1]], np.int32)})[0]
        assert len(tokens[utt]) == -(-mel.shape[1] // 2)
        np.testing.assert_array_equal(tokens[utt], by_hand.reshape(-1))


def test_exported_tokenizer_equals_torch_s3tokenizer(onnx_models):
    import torch

    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    import s3tokenizer.model_v2 as s3v2

    torch.manual_seed(0)  # export_s3_tokenizer's default seed and small config
    model = s3v2.S3TokenizerV2(
        "speech_tokenizer_v2_25hz", s3v2.ModelConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2)
    )
    model.eval()
    mels = np.random.default_rng(0).standard_normal((3, 128, 257)).astype(np.float32)
    lengths = np.array([257, 190, 61], np.int32)
    code, code_len = model.quantize(torch.from_numpy(mels), torch.from_numpy(lengths))
    ours = onnx_extract.tokenize_mels(
        onnx_extract.make_session(onnx_models["s3v2"]), [m[:, :n] for m, n in zip(mels, lengths)]
    )
    for i in range(3):
        np.testing.assert_array_equal(ours[i], code[i, : code_len[i]].numpy())


def test_signature_checks_reject_the_wrong_model(prepared, onnx_models):
    _, data_dir, _, _, _ = prepared
    with pytest.raises(ValueError, match="not S3-compatible"):
        onnx_extract.extract_speech_tokens(data_dir, onnx_models["campplus"], workers=0)
    with pytest.raises(ValueError, match="not campplus-compatible"):
        onnx_extract.extract_embeddings(data_dir, onnx_models["s3v2"], workers=0)
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        onnx_extract.extract_embeddings(data_dir, "nope.onnx", workers=0)


def _dir_bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_parquet_is_read_by_cosyvoice_and_resumes_identically(prepared, monkeypatch):
    root, data_dir, _, _, _ = prepared
    full = root / "parquet_full"
    monkeypatch.setattr(parquet_writer, "MIN_ROWS_FOR_PROCESSES", 0)  # exercise the worker processes
    parquets, skips = parquet_writer.make_parquet_list(data_dir, str(full), num_utts_per_parquet=5, num_processes=2)
    assert skips.counts == {"no speech tokens (see skipped_speech_token.tsv)": 1}
    assert len(parquets) == 4  # 16 complete utterances, 5 per shard
    assert (full / "data.list").read_text().splitlines() == parquets

    from sovits2_jax.parity.torch_refs import import_cosyvoice

    processor = import_cosyvoice("cosyvoice.dataset.processor")
    data = kaldi.read_kaldi_dir(data_dir)
    utt2emb = feature_store.load_vectors(os.path.join(data_dir, "utt2embedding.npz"))
    tokens = feature_store.load_sequences(os.path.join(data_dir, "utt2speech_token.npz"))
    rows = list(processor.parquet_opener([{"src": p} for p in parquets]))
    assert sorted(r["utt"] for r in rows) == sorted(tokens)
    for row in rows:
        audio, sr = sf.read(io.BytesIO(row["audio_data"]))
        ref, ref_sr = sf.read(data.utt2wav[row["utt"]])
        assert sr == ref_sr == 24000 and np.array_equal(audio, ref)
        assert row["text"] == data.utt2text[row["utt"]] and row["spk"] == data.utt2spk[row["utt"]]
        assert np.all(np.isfinite(row["utt_embedding"])) and len(row["spk_embedding"]) == 192
        np.testing.assert_allclose(row["utt_embedding"], utt2emb[row["utt"]], rtol=0, atol=0)
        np.testing.assert_array_equal(row["speech_token"], tokens[row["utt"]])
    utt_maps = [
        json.loads(Path(p).read_text(encoding="utf-8")) for p in (full / "utt2data.list").read_text().splitlines()
    ]
    assert sum(len(m) for m in utt_maps) == 16 and all(v in parquets for m in utt_maps for v in m.values())

    # A job killed while writing shard 2: shards 0-1 done, a temp file and a renamed parquet without its json.
    resumed = root / "parquet_resumed"
    real_write = parquet_writer.write_shard
    calls = []

    def dying_write(des_dir, index, shard_rows):
        if index == 2:
            raise KeyboardInterrupt("killed")
        calls.append(index)
        return real_write(des_dir, index, shard_rows)

    monkeypatch.setattr(parquet_writer, "write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        parquet_writer.make_parquet_list(data_dir, str(resumed), num_utts_per_parquet=5, num_processes=1)
    assert calls == [0, 1] and not (resumed / "data.list").exists()
    (resumed / "parquet_000000002.tar.tmp").write_bytes(b"half a file")
    (resumed / "parquet_000000003.tar").write_bytes(b"renamed, but its json never written")
    done_mtime = os.stat(resumed / "parquet_000000000.tar").st_mtime_ns
    monkeypatch.setattr(parquet_writer, "write_shard", real_write)
    parquet_writer.make_parquet_list(data_dir, str(resumed), num_utts_per_parquet=5, num_processes=2)
    assert os.stat(resumed / "parquet_000000000.tar").st_mtime_ns == done_mtime  # finished shards not redone
    assert not (resumed / "parquet_000000002.tar.tmp").exists()  # rewritten through the same temp name
    full_files, resumed_files = _dir_bytes(full), _dir_bytes(resumed)
    assert full_files.keys() == resumed_files.keys()
    for name in full_files:
        expected = full_files[name].replace(str(full).encode(), str(resumed).encode())
        assert resumed_files[name] == expected, name
