"""Kaldi files from a LibriTTS-layout directory, with bad inputs skipped, counted and listed."""

import os

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.data.prep.kaldi import prepare, read_kaldi_dir


def _utt(root, utt, text="hello there", seconds=0.5):
    spk, chapter = utt.split("_")[:2]
    d = root / spk / chapter
    d.mkdir(parents=True, exist_ok=True)
    sf.write(d / f"{utt}.wav", 0.1 * np.sin(np.arange(int(24000 * seconds)) / 7.0), 24000, subtype="PCM_16")
    if text is not None:
        (d / f"{utt}.normalized.txt").write_text(text, encoding="utf-8")
    return d / f"{utt}.wav"


def test_prepare_writes_kaldi_files_and_skips_bad_input(tmp_path):
    src, des = tmp_path / "src", tmp_path / "des"
    _utt(src, "19_198_000001_000000", "  Hello   world. ")
    _utt(src, "19_198_000000_000000", "First one.")
    _utt(src, "103_1241_000000_000001", "Another speaker.")
    _utt(src, "103_1241_000000_000002", "")  # empty transcript
    _utt(src, "103_1241_000000_000003", None)  # missing transcript
    (_utt(src, "103_1241_000000_000004")).write_bytes(b"")  # zero-length file
    (_utt(src, "103_1241_000000_000005")).write_bytes(b"RIFF$\x00\x00\x00WAVEfmt garbage")  # corrupt
    (src / "200" / "7").mkdir(parents=True)  # speaker folder without audio
    data, skips = prepare(str(src), str(des))

    assert list(data.utt2wav) == ["103_1241_000000_000001", "19_198_000000_000000", "19_198_000001_000000"]
    assert skips.counts == {
        "empty transcript": 1, "missing transcript": 1, "zero-length audio file": 1, "corrupt audio": 1,
        "speaker folder without audio": 1,
    }  # fmt: skip
    assert "skipped 5" in skips.summary()
    listed = (des / "skipped_kaldi.tsv").read_text().splitlines()
    assert len(listed) == 5 and any(line.startswith(str(src / "200")) for line in listed)

    lines = {name: (des / name).read_text().splitlines() for name in ("wav.scp", "text", "utt2spk", "spk2utt")}
    assert lines["text"][2] == "19_198_000001_000000 Hello world."
    assert lines["utt2spk"] == ["103_1241_000000_000001 103", "19_198_000000_000000 19", "19_198_000001_000000 19"]
    assert lines["spk2utt"] == ["103 103_1241_000000_000001", "19 19_198_000000_000000 19_198_000001_000000"]
    utt, path = lines["wav.scp"][0].split(" ")
    assert utt == "103_1241_000000_000001"
    assert os.path.isabs(path) and path.endswith("103/1241/103_1241_000000_000001.wav")

    back = read_kaldi_dir(str(des))
    assert back.utt2wav == data.utt2wav and back.utt2text == data.utt2text and back.utt2spk == data.utt2spk


def test_prepare_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "des"))
    (tmp_path / "empty" / "1" / "2").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable utterances"):
        prepare(str(tmp_path / "empty"), str(tmp_path / "des"))
    with pytest.raises(FileNotFoundError, match=r"wav\.scp"):
        read_kaldi_dir(str(tmp_path / "empty"))


def test_the_cli_prints_its_summary_once_and_nothing_else(tmp_path):
    """A prep stage run as a command says what it did in one plain line (no absl prefix, no second copy, no JAX
    start-up lines)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    _utt(src, "19_198_000000_000000", "First one.")
    _utt(src, "19_198_000001_000000", "")
    cmd = [sys.executable, "-m", "sovits2_jax.data.prep.kaldi", f"--src_dir={src}", f"--des_dir={tmp_path / 'des'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert (out.stdout + out.stderr).splitlines() == [  # one line per skipped input, then the summary
        "kaldi: skipped 19_198_000001_000000: empty transcript",
        f"kaldi: 1 utterances, 1 speakers -> {tmp_path / 'des'}; kaldi: skipped 1 (1 empty transcript)",
    ]
