"""``python -m sovits2_jax.demo.vocode``: every ground truth's own mel through a model directory's HiFT, in the
evaluator's layout, against the reference (matcha's mel_spectrogram, then cosyvoice's HiFTGenerator.inference
loaded from the same hift.pt, excitation noise off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sovits2_jax.audio.io import load_audio, write_wav

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A buzzy vowel-like signal with a moving pitch (enough structure for a non-trivial mel)."""
    t = np.arange(int(24000 * seconds)) / 24000
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))) / 24000
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    wav = wav + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


@pytest.fixture(scope="module")
def synthesis_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthesis")
    for i, (seconds, f0) in enumerate([(0.7, 140.0), (1.3, 210.0)]):
        utt = f"spk{i}_utt"
        write_wav(root / f"{utt}.ref.wav", _voice(seconds, f0, i), 24000)
        write_wav(root / f"{utt}.wav", _voice(0.5, f0, i + 10), 24000)
        write_wav(root / f"{utt}.prompt.wav", _voice(0.6, f0, i + 20), 24000)
        (root / f"{utt}.txt").write_text(f"sentence {i}\n")
    write_wav(root / "orphan.wav", _voice(0.4, 100.0, 9), 24000)  # no ground truth: not vocoded
    return root


def _reference(model_dir, wav: np.ndarray) -> np.ndarray:
    import torch

    from sovits2_jax.convert import cosyvoice2, cosyvoice2_hift
    from sovits2_jax.parity.references import hift as parity_hift
    from sovits2_jax.parity.torch_refs import import_cosyvoice, to_numpy

    import_cosyvoice()
    from matcha.utils.audio import mel_spectrogram

    config = cosyvoice2_hift.config_from_yaml(cosyvoice2.read_yaml(model_dir))
    model = parity_hift.build_reference(config, seed=0, perturb=False)
    model.load_state_dict(torch.load(os.path.join(model_dir, "hift.pt"), weights_only=True))
    mel = mel_spectrogram(torch.from_numpy(wav)[None], 1920, 80, 24000, 480, 1920, 0, 8000, center=False)
    with torch.no_grad(), parity_hift.torch_noise_off():
        speech, _ = model.inference(speech_feat=mel)
    return to_numpy(speech)[0]


def test_ground_truth_mels_vocoded_equal_the_reference_hift(synthesis_dir, tiny_cosyvoice2_dir, tmp_path):
    out = tmp_path / "vocoded"
    cmd = [sys.executable, "-m", "sovits2_jax.demo.vocode", f"--model_dir={tiny_cosyvoice2_dir}",
           f"--wav_dir={synthesis_dir}", f"--out_dir={out}", "--batch_size=2"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "vocode: 2 ground-truth mels" in run.stdout
    info = json.loads((out / "vocode.json").read_text())
    assert info["utterances"] == 2 and info["audio_seconds"] == pytest.approx(0.7 + 1.3, abs=0.03)
    assert not (out / "orphan.wav").exists()
    for utt in ("spk0_utt", "spk1_utt"):
        for suffix in (".txt", ".prompt.wav", ".ref.wav"):  # copied unchanged for the evaluator
            assert (out / f"{utt}{suffix}").read_bytes() == (synthesis_dir / f"{utt}{suffix}").read_bytes()
        ref, _ = load_audio(str(synthesis_dir / f"{utt}.ref.wav"))
        expected = _reference(tiny_cosyvoice2_dir, ref)
        assert np.abs(expected).max() > 0.01
        write_wav(tmp_path / f"{utt}.expected.wav", expected, 24000)  # the reference in the same 16-bit PCM
        expected, _ = load_audio(str(tmp_path / f"{utt}.expected.wav"))
        ours, sr = load_audio(str(out / f"{utt}.wav"))
        assert sr == 24000 and ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0, err_msg=utt)


def test_a_directory_without_ground_truth_is_one_error_line(tiny_cosyvoice2_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [sys.executable, "-m", "sovits2_jax.demo.vocode", f"--model_dir={tiny_cosyvoice2_dir}",
           f"--wav_dir={empty}", f"--out_dir={tmp_path / 'out'}"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("error: --wav_dir") and "ref.wav" in run.stderr
    assert not (tmp_path / "out").exists()
