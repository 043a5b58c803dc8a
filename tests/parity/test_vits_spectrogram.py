"""Linear spectrogram / log-mel frontend against GPT-SoVITS's spectrogram_torch / mel_spectrogram_torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sovits2_jax.audio.spectrogram import linear_spectrogram, mel_spectrogram, num_frames  # noqa: E402

pytestmark = pytest.mark.parity


def _wave(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 32000.0
    y = 0.4 * np.sin(2 * np.pi * 187.0 * t) + 0.1 * rng.standard_normal(n)
    return np.clip(y, -1, 1).astype(np.float32)[None]


@pytest.mark.parametrize("n", [32000, 20480 + 17])
def test_linear_spectrogram_matches_spectrogram_torch(n):
    from gpt_sovits.module.mel_processing import spectrogram_torch

    y = np.concatenate([_wave(n, 0), _wave(n, 1)])
    want = spectrogram_torch(torch.from_numpy(y), 2048, 32000, 640, 2048, center=False).numpy().transpose(0, 2, 1)
    got = np.asarray(linear_spectrogram(y, n_fft=2048, hop_size=640, win_size=2048))
    assert got.shape == want.shape == (2, num_frames(n, 2048, 640), 1025)
    # An fp32 FFT's error scales with the frame's energy, not the bin's: both torch and we sit ~3e-5 (abs) from a
    # float64 FFT on frames peaking near 20, so the 1e-5 tolerance is taken relative to each frame's peak.
    scale = np.maximum(np.abs(want).max(axis=-1, keepdims=True), 1.0)
    assert (np.abs(got - want) <= 1e-5 * scale).all(), np.abs(got - want).max()


def test_mel_spectrogram_matches_reference():
    from gpt_sovits.module.mel_processing import mel_spectrogram_torch

    y = _wave(16000, 3)
    want = mel_spectrogram_torch(torch.from_numpy(y), 2048, 128, 32000, 640, 2048, 0, None).numpy().transpose(0, 2, 1)
    got = np.asarray(mel_spectrogram(y))
    np.testing.assert_allclose(got, want, atol=1e-4)  # log domain; |values| up to ~11


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="batch, samples"):
        linear_spectrogram(np.zeros((1, 1, 100), np.float32))
    with pytest.raises(ValueError, match="too short"):
        linear_spectrogram(np.zeros((1, 100), np.float32))
