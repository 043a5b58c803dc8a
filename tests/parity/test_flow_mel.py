"""Matcha mel_spectrogram (numpy and JAX) against matcha's torch function on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sovits2_jax.audio import mel

pytestmark = pytest.mark.parity


def _real_speech_24k() -> np.ndarray:
    import importlib.util

    import librosa
    import soundfile as sf

    # find_spec locates the package without importing it (s3tokenizer imports torchaudio at import time).
    wav_path = Path(importlib.util.find_spec("s3tokenizer").origin).parent / "assets" / "BAC009S0764W0121.wav"
    wav, sr = sf.read(wav_path, dtype="float32")
    wav = librosa.resample(wav, orig_sr=sr, target_sr=24000)
    return mel.pad_to_multiple(wav[: 24000 * 3])


def _matcha(wav: np.ndarray) -> np.ndarray:
    import torch

    from sovits2_jax.parity.torch_refs import import_cosyvoice

    import_cosyvoice()
    from matcha.utils.audio import mel_spectrogram

    out = mel_spectrogram(torch.from_numpy(wav)[None], 1920, 80, 24000, 480, 1920, 0, 8000, center=False)
    return out[0].numpy().T  # [frames, mels]


@pytest.fixture(scope="module")
def speech():
    wav = _real_speech_24k()
    return wav, _matcha(wav)


def test_numpy_mel_matches_matcha(speech):
    wav, ref = speech
    ours = mel.mel_spectrogram_np(wav)
    assert ours.shape == ref.shape == (wav.shape[0] // 480, 80)
    assert ref.max() - ref.min() > 5.0  # real speech, not silence
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_jax_mel_matches_matcha(speech):
    wav, ref = speech
    ours = np.asarray(mel.mel_spectrogram(wav))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_batched_jax_mel_equals_rows(speech):
    wav, _ = speech
    batch = np.stack([wav, wav[::-1].copy()])
    out = np.asarray(mel.mel_spectrogram(batch))
    np.testing.assert_allclose(out[1], mel.mel_spectrogram_np(batch[1]), atol=1e-4, rtol=0)
    assert out.shape == (2, wav.shape[0] // 480, 80)


def test_too_short_input_is_rejected():
    with pytest.raises(ValueError, match="too short"):
        mel.mel_spectrogram_np(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="samples"):
        mel.mel_spectrogram_np(np.zeros((1, 2, 3000), np.float32))
