"""The quality ladder's measuring pieces: frame-by-frame mel distance, token error, Griffin-Lim, the ladder table."""

import json

import numpy as np
import pytest
import soundfile

from sovits2_jax.audio.griffin_lim import log_mel_to_audio
from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
from sovits2_jax.demo import ladder_table
from sovits2_jax.demo.ladder import edit_distance, token_scores
from sovits2_jax.eval.mel_distance import frame_distances, mel_cepstra


def _voiced(seconds: float = 1.0, f0: float = 140.0, sr: int = 24000) -> np.ndarray:
    """A harmonic tone with a moving formant-like envelope (enough spectral structure for a mel to show)."""
    t = np.arange(int(seconds * sr)) / sr
    wav = sum(np.sin(2 * np.pi * f0 * k * t) / k * (1 + np.sin(2 * np.pi * 3 * t + k)) for k in range(1, 20))
    return (0.1 * wav / np.abs(wav).max()).astype(np.float32)


def test_edit_distance_and_token_scores():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1  # one deletion
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2  # two substitutions
    assert edit_distance([], [4, 5]) == 2
    scores = token_scores([1, 9, 3, 4, 5, 6], [1, 2, 3, 4])  # 1 substitution + 2 insertions over 4
    assert scores == {"token_error": pytest.approx(0.75), "duration_ratio": pytest.approx(1.5)}


def test_frame_distances_see_a_shift_that_dtw_would_forgive():
    mel = mel_spectrogram_np(_voiced(), MelConfig())
    same = frame_distances(mel, mel)
    assert same["mcd"] == pytest.approx(0.0, abs=1e-9) and same["l1"] == 0.0 and same["length_ratio"] == 1.0
    shifted = frame_distances(np.concatenate([mel[:3], mel[:-3]]), mel)
    louder = frame_distances(mel + 1.0, mel)  # a constant log-gain moves c0 only, which MCD leaves out
    assert shifted["mcd"] > 0.5 and louder["mcd"] == pytest.approx(0.0, abs=1e-6) and louder["l1"] == pytest.approx(1.0)
    # cepstra of a flat spectrum are zero beyond c0; a pure cosine over the bins is one coefficient
    assert np.allclose(mel_cepstra(np.full((2, 80), -3.0)), 0.0, atol=1e-12)
    cosine = np.cos(np.pi / 80 * (np.arange(80) + 0.5) * 3)[None]
    np.testing.assert_allclose(mel_cepstra(cosine)[0], np.eye(24)[2], atol=1e-12)
    with pytest.raises(ValueError, match="empty"):
        frame_distances(mel[:0], mel)


def test_griffin_lim_rebuilds_audio_whose_mel_is_the_input():
    cfg = MelConfig()
    mel = mel_spectrogram_np(_voiced(), cfg)
    wav = log_mel_to_audio(mel, cfg)
    assert wav.dtype == np.float32 and abs(len(wav) - len(mel) * cfg.hop_size) <= cfg.hop_size
    again = mel_spectrogram_np(wav, cfg)
    rebuilt = frame_distances(again[2:-2], mel[2:-2])  # the edges lack overlapping frames
    noise = frame_distances(mel_spectrogram_np(np.random.default_rng(0).normal(0, 0.03, len(wav)).astype(np.float32),
                                               cfg), mel)  # fmt: skip
    assert rebuilt["mcd"] < 0.3 * noise["mcd"], (rebuilt, noise)
    with pytest.raises(ValueError, match="log-mel"):
        log_mel_to_audio(mel[:, :40], cfg)


def _layout(folder, ours_seconds: float, mcd: float, similarity: float, ovrl: float):
    folder.mkdir(parents=True)
    soundfile.write(folder / "u1.wav", np.zeros(int(ours_seconds * 100)), 100)
    soundfile.write(folder / "u1.ref.wav", np.zeros(100), 100)
    metrics = {"mcd": {"mean": mcd, "count": 1}, "similarity": {"mean": similarity, "count": 1},
               "dnsmos_ovrl": {"mean": ovrl, "count": 1}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps({"metrics": metrics}))


def test_ladder_table_reads_the_rungs_and_calibration_and_checks_the_aims(tmp_path):
    _layout(tmp_path / "vocoded", 1.0, 3.5, 0.9, 2.7)
    _layout(tmp_path / "ladder" / "resynthesis", 1.0, 6.5, 0.85, 2.4)
    _layout(tmp_path / "synthesis", 1.3, 7.0, 0.7, 2.6)
    _layout(tmp_path / "calibration" / "noise", 1.0, 15.0, 0.3, 1.1)
    means = {"token_error": 0.25, "duration_ratio": 0.8, "flow_mcd": 5.5}
    (tmp_path / "ladder" / "ladder.json").write_text(json.dumps({"means": means, "utterances": 1}))
    table = ladder_table.collect(tmp_path, {"llm": {"final_eval_acc": 0.4}})
    rungs = {r["key"]: r for r in table["rungs"]}
    assert list(rungs) == ["vocoder", "resynthesis", "lm", "tts"]  # resynthesis_gl did not run: left out
    assert rungs["vocoder"]["aims"]["mcd"]["met"] is True
    assert rungs["resynthesis"]["aims"]["mcd"]["met"] is False and rungs["resynthesis"]["scores"]["flow_mel_mcd"] == 5.5
    assert rungs["lm"]["aims"]["token_error"]["met"] is True
    assert rungs["lm"]["aims"]["duration_ratio"]["met"] is False  # 0.8 is 20% short
    assert rungs["lm"]["scores"]["teacher_forced_acc"] == 0.4
    assert rungs["tts"]["scores"]["duration_ratio"] == pytest.approx(1.3)
    assert rungs["tts"]["aims"]["duration_ratio"]["met"] is False and rungs["tts"]["aims"]["mcd"]["met"] is True
    assert [c["key"] for c in table["calibration"]] == ["noise"]
    text = "\n".join(ladder_table.markdown(table))
    assert "| calibration: noise at the truth's level | 15.00 | 0.300 | 1.10 | 1.00 |  |" in text
    assert "token error 0.250; teacher-forced accuracy 0.400" in text
    assert "- aims of `small`, lm: token_error <= 0.3 (met), duration_ratio within 0.15 (not met)" in text
    assert "- aims of `small`, lm: token_error <= 0.3, duration_ratio within 0.15\n" in "\n".join(
        ladder_table.markdown(table, judged=False)
    )  # another size is not held to them
    assert ladder_table.markdown({"rungs": [], "calibration": []}) == []


def test_gpt_sovits2_ladder_has_its_vits_vocoder_rung_and_the_ar_accuracy(tmp_path):
    _layout(tmp_path / "ladder" / "resynthesis", 1.0, 3.9, 0.85, 2.4)
    _layout(tmp_path / "synthesis", 1.0, 7.5, 0.7, 2.6)
    means = {"token_error": 0.5, "duration_ratio": 1.1, "flow_mcd": None}
    ladder = {"family": "gpt_sovits2", "means": means, "utterances": 1}
    (tmp_path / "ladder" / "ladder.json").write_text(json.dumps(ladder))
    table = ladder_table.collect(tmp_path, {"llm": {"final_eval_acc": 0.9}, "ar": {"final_eval_acc": 0.3}})
    rungs = {r["key"]: r for r in table["rungs"]}
    assert list(rungs) == ["vocoder", "lm", "tts"]  # no flow, no separate mel vocoder
    assert "VITS2" in rungs["vocoder"]["label"] and rungs["vocoder"]["aims"]["mcd"]["met"] is True
    assert "flow_mel_mcd" not in rungs["vocoder"]["scores"]
    assert rungs["lm"]["scores"]["teacher_forced_acc"] == 0.3  # the AR's, not another part's
    assert rungs["lm"]["aims"]["duration_ratio"]["met"] is True
