"""The offline evaluator (MCD-DTW, resemblyzer similarity, DNSMOS, pocketsphinx WER) on known espeak-ng pairs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from sovits2_jax.audio.io import write_wav
from sovits2_jax.audio.loudness import TARGET_LUFS, normalize_loudness
from sovits2_jax.audio.resample import resample
from sovits2_jax.data.prep.corpus import SAMPLE_RATE, load_sentences, make_speakers, split_sentences
from sovits2_jax.data.prep.espeak import Espeak

for module in ("mel_cepstral_distance", "speechmos", "pocketsphinx", "jiwer", "resemblyzer"):
    pytest.importorskip(module)  # the `eval` extra (launch/setup_venv.sh installs it)

NOISE_DNSMOS_BOUND = 2.0  # DNSMOS OVRL of white noise / silence stays below this (speech of espeak: ~2.6)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _render(engine: Espeak, text: str, speaker, rate_offset: int = 0) -> np.ndarray:
    wav = engine.synthesize(text, speaker.voice, rate=speaker.rate + rate_offset, pitch=speaker.pitch,
                            pitch_range=speaker.pitch_range)  # fmt: skip
    wav = resample(wav.astype(np.float32) / 32768.0, engine.sample_rate, SAMPLE_RATE)
    return normalize_loudness(wav, SAMPLE_RATE, TARGET_LUFS)


def _put(root, utt: str, wav, text: str | None = None, prompt=None, ref=None) -> None:
    write_wav(root / f"{utt}.wav", wav, SAMPLE_RATE)
    if text is not None:
        (root / f"{utt}.txt").write_text(text, encoding="utf-8")
    for suffix, audio in ((".prompt.wav", prompt), (".ref.wav", ref)):
        if audio is not None:
            write_wav(root / f"{utt}{suffix}", audio, SAMPLE_RATE)


def _evaluate(root) -> None:
    """A directory of known pairs (built-in corpus voices and dev sentences) in ROOT/wavs, evaluated through the CLI
    into ROOT/out (its stdout in ROOT/stdout.txt)."""
    wav_dir, out_dir = root / "wavs", root / "out"
    wav_dir.mkdir(parents=True)
    voice_a, voice_b = make_speakers(2, ["en"], seed=0)
    s1, s2 = sorted(split_sentences(load_sentences("en"), "dev"), key=len)[:2]  # the shortest: DTW is slow
    engine = Espeak()
    a1, a1_faster, a2, b1 = (_render(engine, s1, voice_a), _render(engine, s1, voice_a, 15),
                             _render(engine, s2, voice_a), _render(engine, s1, voice_b))  # fmt: skip
    noise = np.random.default_rng(0).normal(0.0, 0.1, len(a1)).astype(np.float32)
    _put(wav_dir, "identical", a1, s1, prompt=a1, ref=a1)
    _put(wav_dir, "rate_changed", a1_faster, s1, prompt=a2, ref=a1)  # right text, same voice, other tempo
    _put(wav_dir, "misspoken", a2, s1, prompt=a1, ref=a1)  # same voice reading the other sentence
    _put(wav_dir, "other_voice", b1, s1, prompt=a2, ref=a1)
    _put(wav_dir, "noise", noise, s1, ref=a1)
    (wav_dir / "noise.prompt.wav").write_bytes(b"not a wav")
    _put(wav_dir, "silence", np.zeros_like(a1))  # no text, prompt or reference: only DNSMOS
    (wav_dir / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (wav_dir / "truncated.wav").write_bytes((wav_dir / "identical.wav").read_bytes()[:30])
    proc = subprocess.run(
        [sys.executable, "-m", "sovits2_jax.eval", f"--wav_dir={wav_dir}", f"--out={out_dir}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "stdout.txt").write_text(proc.stdout)
    (root / "stderr.txt").write_text(proc.stderr)


@pytest.fixture(scope="module")
def evaluated(build_once):
    """The known pairs evaluated once through the CLI (once per session: ``build_once``): rows, summary, stdout."""
    root = build_once("eval_known_pairs", _evaluate)
    out_dir = root / "out"
    rows = {}
    with open(out_dir / "metrics.tsv", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            rows[row["utt"]] = row
    summary = json.loads((out_dir / "summary.json").read_text())
    stdout = (root / "stdout.txt").read_text()
    print(stdout)
    return rows, summary, stdout


def _f(rows, utt: str, metric: str) -> float:
    return float(rows[utt][metric])


def test_identical_audio_scores_perfectly(evaluated):
    rows, _, _ = evaluated
    assert _f(rows, "identical", "mcd") == pytest.approx(0.0, abs=1e-6)
    assert _f(rows, "identical", "similarity") > 0.99


def test_mcd_orders_the_known_pairs(evaluated):
    rows, _, _ = evaluated
    right = _f(rows, "rate_changed", "mcd")
    assert 0.0 < right < _f(rows, "misspoken", "mcd")
    assert right < _f(rows, "other_voice", "mcd")
    assert _f(rows, "noise", "mcd") > 5.0 * right


def test_similarity_separates_voices(evaluated):
    rows, _, _ = evaluated
    same_voice = _f(rows, "rate_changed", "similarity")  # voice A reading s1 against A reading s2
    assert _f(rows, "other_voice", "similarity") < same_voice
    assert same_voice < _f(rows, "identical", "similarity")


def test_dnsmos_is_low_for_noise_and_silence(evaluated):
    rows, _, _ = evaluated
    speech = _f(rows, "identical", "dnsmos_ovrl")
    for utt in ("noise", "silence"):
        ovrl = _f(rows, utt, "dnsmos_ovrl")
        assert ovrl < NOISE_DNSMOS_BOUND < speech, (utt, ovrl, speech)
        assert _f(rows, utt, "dnsmos_bak") < _f(rows, "identical", "dnsmos_bak") or utt == "silence"


def test_wer_is_measured_and_reported(evaluated):
    rows, summary, _ = evaluated
    for utt in ("identical", "misspoken", "other_voice", "noise"):
        assert 0.0 <= _f(rows, utt, "wer") <= 2.0
    assert math.isnan(_f(rows, "silence", "wer"))  # no text
    assert summary["metrics"]["wer"]["count"] == 5


def test_no_per_file_library_notices(evaluated, build_once):
    """The MCD package's speed hint about its 32 ms window (768 samples at 24 kHz) is not repeated per file."""
    stderr = (build_once("eval_known_pairs", _evaluate) / "stderr.txt").read_text()
    assert "should be a power of 2" not in stderr, stderr[-2000:]


def test_bad_files_are_skipped_and_counted(evaluated):
    rows, summary, stdout = evaluated
    assert "corrupt" not in rows and "truncated" not in rows
    assert summary["utterances"] == 8 and summary["evaluated"] == 6
    assert summary["skipped"] == {"synthesis unreadable": 2}
    assert summary["missing"] == {"prompt missing": 1, "prompt unreadable": 1, "reference missing": 1,
                                  "text missing": 1}  # fmt: skip
    assert "skipped 2 x synthesis unreadable" in stdout
    assert math.isfinite(_f(rows, "noise", "mcd")) and math.isnan(_f(rows, "noise", "similarity"))
    for metric, count in (("mcd", 5), ("similarity", 4), ("dnsmos_ovrl", 6), ("wer", 5)):
        assert summary["metrics"][metric]["count"] == count
    finite = [_f(rows, u, "mcd") for u in rows if u != "silence"]
    assert summary["metrics"]["mcd"]["mean"] == pytest.approx(np.mean(finite), abs=1e-3)


def test_a_directory_with_nothing_to_evaluate_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    proc = subprocess.run([sys.executable, "-m", "sovits2_jax.eval", f"--wav_dir={tmp_path}"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: --wav_dir {tmp_path} has no utterance to evaluate (no {{utt}}.wav)"
    ]
    assert not (tmp_path / "metrics.tsv").exists() and not (tmp_path / "summary.json").exists()
