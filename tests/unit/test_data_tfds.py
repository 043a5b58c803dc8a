"""TFDS LibriTTS source: written in the LibriTTS layout (TFDS mock data; needs the tfds extra)."""

import os

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.data.prep import tfds_source


def test_utterance_ids_follow_libritts():
    ex = {"speaker_id": np.int64(19), "chapter_id": np.int64(198), "id": b"19_198_000000_000001"}
    assert tfds_source.utterance_id(ex) == ("19", "198", "19_198_000000_000001")
    odd = {"speaker_id": 7, "chapter_id": 3, "id": "a b/c"}
    assert tfds_source.utterance_id(odd) == ("7", "3", "7_3_a-b-c")


def test_unknown_split_is_named(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="train_clean99"):
        tfds_source.export_libritts(str(tmp_path), ["train_clean99"])


def test_mock_libritts_becomes_a_prepared_corpus(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    from sovits2_jax.data.prep.kaldi import prepare

    with tfds.testing.mock_data(num_examples=6):
        counts = tfds_source.export_libritts(
            str(tmp_path / "LibriTTS"), ["train_clean100", "dev_clean"], max_examples=4
        )
    assert counts == {"train_clean100": 4, "dev_clean": 4}
    wavs = sorted((tmp_path / "LibriTTS" / "train-clean-100").glob("*/*/*.wav"))
    assert len(wavs) == 4
    for wav in wavs:
        spk, chapter = wav.parent.parent.name, wav.parent.name
        assert wav.name.startswith(f"{spk}_{chapter}_")
        assert sf.info(wav).samplerate == 24000
        assert os.path.exists(str(wav)[:-4] + ".original.txt")
    data, skips = prepare(str(tmp_path / "LibriTTS" / "train-clean-100"), str(tmp_path / "data"))
    assert len(data) + len(skips) == 4 and len(data) >= 1
    assert all(utt.startswith(spk + "_") for utt, spk in data.utt2spk.items())
