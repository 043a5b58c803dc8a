"""GPT-SoVITS list files (wav|speaker|lang|text) as stage 0 input: the Kaldi files, bad lines skipped and counted,
in-process and through launch/recipes/libritts.sh."""

import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from sovits2_jax.data.prep.kaldi import prepare, read_kaldi_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wav(path, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(32000 * seconds)) / 5.0), 32000, subtype="PCM_16")
    return path


def _corpus(root):
    """A list file with good and bad lines; returns its path."""
    for rel in ("wavs/a.wav", "wavs/b.wav", "dup/a.wav", "wavs/d.wav", "wavs/bob_e.wav", "my dir/f.wav"):
        _wav(root / rel)
    c = _wav(root / "elsewhere" / "c.wav")
    (root / "wavs" / "z.wav").write_bytes(b"")
    lines = [
        "wavs/a.wav|alice|ZH|你好，世界。",
        "wavs/b.wav|alice|en|  Hello   there. ",
        f"{c}|bob|JP|こんにちは。",  # absolute path
        "dup/a.wav|alice|ko|안녕하세요.",  # same file name as wavs/a.wav: id made unique
        "wavs/d.wav|Bob Smith|EN|Spaces in the speaker.",
        "wavs/bob_e.wav|bob|YUE|你好。",  # the name already starts with the speaker
        "",
        "wavs/a.wav|alice|ZH|the same wav again",
        "wavs/missing.wav|bob|EN|No such file.",
        "wavs/b.wav|bob|EN",
        "wavs/b.wav|bob|EN|text|extra",
        "wavs/b.wav|bob|EN|   ",
        "wavs/b.wav|bob|fr|Bonjour.",
        "wavs/z.wav|bob|en|Zero bytes.",
        "my dir/f.wav|bob|en|A space in the path.",
    ]
    path = root / "voices.list"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_list_file_gives_the_kaldi_files_and_counts_bad_lines(tmp_path):
    src = _corpus(tmp_path / "src")
    des = tmp_path / "des"
    data, skips = prepare(str(src), str(des))

    utts = ["Bob_Smith_d", "alice_a", "alice_a-2", "alice_b", "bob_c", "bob_e"]
    assert list(data.utt2wav) == utts
    assert skips.counts == {
        "repeated wav": 1, "missing audio": 1, "wrong field count": 2, "empty text": 1, "unknown language": 1,
        "zero-length audio file": 1, "wav path with whitespace (wav.scp cannot hold it)": 1,
    }  # fmt: skip
    assert "skipped 8" in skips.summary()
    listed = (des / "skipped_kaldi.tsv").read_text(encoding="utf-8").splitlines()
    assert len(listed) == 8 and listed[0].startswith(f"{src}:8\trepeated wav")

    read = {n: (des / n).read_text(encoding="utf-8").splitlines() for n in ("wav.scp", "text", "utt2spk", "spk2utt")}
    wav = tmp_path / "src"
    assert read["wav.scp"] == [
        f"Bob_Smith_d {wav / 'wavs/d.wav'}", f"alice_a {wav / 'wavs/a.wav'}", f"alice_a-2 {wav / 'dup/a.wav'}",
        f"alice_b {wav / 'wavs/b.wav'}", f"bob_c {wav / 'elsewhere/c.wav'}", f"bob_e {wav / 'wavs/bob_e.wav'}",
    ]  # fmt: skip
    assert read["text"][1] == "alice_a 你好，世界。" and read["text"][3] == "alice_b Hello there."
    assert read["utt2spk"] == [
        "Bob_Smith_d Bob_Smith", "alice_a alice", "alice_a-2 alice", "alice_b alice", "bob_c bob", "bob_e bob",
    ]  # fmt: skip
    assert read["spk2utt"] == ["Bob_Smith Bob_Smith_d", "alice alice_a alice_a-2 alice_b", "bob bob_c bob_e"]
    assert (des / "utt2lang").read_text().splitlines() == [
        "Bob_Smith_d en", "alice_a zh", "alice_a-2 ko", "alice_b en", "bob_c ja", "bob_e yue",
    ]  # fmt: skip
    back = read_kaldi_dir(str(des))
    assert back.utt2wav == data.utt2wav and back.utt2text == data.utt2text and back.utt2spk == data.utt2spk


def test_wav_dir_finds_files_by_name_even_from_windows_paths(tmp_path):
    wavs = tmp_path / "wavs"
    _wav(wavs / "a.wav")
    lst = tmp_path / "lists" / "w.list"
    lst.parent.mkdir()
    lst.write_text("D:\\GPT-SoVITS\\output\\slicer_opt\\a.wav|spk|zh|一句话。\n/old/machine/b.wav|spk|zh|另一句。\n")
    data, skips = prepare(str(lst), str(tmp_path / "des"), wav_dir=str(wavs))
    assert data.utt2wav == {"spk_a": str(wavs / "a.wav")}
    assert skips.counts == {"missing audio": 1}


def test_recipe_stage_zero_on_a_list_file(tmp_path):
    src = _corpus(tmp_path / "src")
    work = tmp_path / "work"
    cmd = ["bash", os.path.join(ROOT, "launch/recipes/libritts.sh"), "--stage", "-1", "--stop_stage", "0",
           "--corpus", str(src), "--work", str(work)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"stage -1: using the list file {src}" in out.stdout
    summary = [line for line in out.stderr.splitlines() if line.startswith("kaldi: 6 utterances, 3 speakers")]
    assert len(summary) == 1 and "skipped 8" in summary[0]  # the stage's summary, logged once
    expected, _ = prepare(str(src), str(tmp_path / "direct"))
    assert read_kaldi_dir(str(work / "data" / "train")).utt2wav == expected.utt2wav
    assert not (work / "corpus").exists()  # nothing was built

    bad = subprocess.run([*cmd, "--list", str(src)], capture_output=True, text=True)  # --corpus and --list
    assert bad.returncode == 2 and "give --corpus or --list, not both" in bad.stderr
