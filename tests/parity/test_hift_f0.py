"""F0 training targets against CosyVoice2's ``compute_f0`` (pyworld harvest + stonemask, resized to mel frames)."""

from __future__ import annotations

import numpy as np
import pytest

from sovits2_jax.audio.f0 import extract_f0, resize_linear

torch = pytest.importorskip("torch")
pytest.importorskip("pyworld")
pytestmark = pytest.mark.parity


def _voice(seconds=1.2, sr=24000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    wav[: sr // 5] = 0.0  # a silent (unvoiced) start
    return (wav + 0.003 * rng.standard_normal(t.shape)).astype(np.float32)


def test_extract_f0_matches_cosyvoice_compute_f0():
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    processor = import_cosyvoice("cosyvoice.dataset.processor")
    wav = _voice()
    frames = len(wav) // 480
    sample = {
        "sample_rate": 24000,
        "speech": torch.from_numpy(wav)[None],
        "utt": "u",
        "text_token": [1],
        "speech_feat": torch.zeros(frames, 80),
    }
    want = next(iter(processor.compute_f0([sample], 24000, 480)))["pitch_feat"].numpy()
    got = extract_f0(wav, 24000, 480, num_frames=frames)
    assert got.shape == want.shape == (frames,)
    assert np.median(got[frames // 3 :]) == pytest.approx(140, abs=25)  # the tone is tracked
    assert (got[:8] == 0).all()  # silence is unvoiced
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_resize_linear_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    for n, size in [(61, 60), (100, 37), (10, 45)]:
        x = rng.standard_normal(n)
        want = torch.nn.functional.interpolate(torch.from_numpy(x).view(1, 1, -1), size=size, mode="linear")
        np.testing.assert_allclose(resize_linear(x, size), want.view(-1).numpy(), rtol=1e-12, atol=1e-12)


def test_extract_f0_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        extract_f0(np.zeros((2, 100)), 24000)
