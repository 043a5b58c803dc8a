"""F0 targets for HiFT GAN training, as CosyVoice2's ``compute_f0`` makes them (numpy + pyworld).

pyworld harvest at a frame period of one mel hop (20 ms at 24 kHz / 480), falling back to dio when harvest finds
fewer than 5 voiced frames, refined by stonemask, then linearly resampled to the mel frame count with torch's
``interpolate(size=..., mode='linear', align_corners=False)`` arithmetic.
"""

from __future__ import annotations

import numpy as np


def resize_linear(x: np.ndarray, size: int) -> np.ndarray:
    """torch ``F.interpolate(x[None, None], size=size, mode='linear')`` of a 1-D float64 array."""
    n = x.shape[0]
    if n == 0 or size <= 0:
        raise ValueError(f"resize_linear: cannot resize {n} values to {size}")
    if n == size:
        return x.copy()
    scale = n / size
    real = np.maximum(scale * (np.arange(size, dtype=np.float64) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(real).astype(np.int64), n - 1)
    i1 = np.where(i0 < n - 1, i0 + 1, i0)
    w1 = np.clip(real - i0, 0.0, 1.0)
    return x[i0] * (1.0 - w1) + x[i1] * w1


def extract_f0(wav: np.ndarray, sample_rate: int, hop_size: int = 480, num_frames: int | None = None) -> np.ndarray:
    """F0 in Hz (0 where unvoiced) of a mono waveform, one value per ``hop_size`` samples or per mel frame.

    ``num_frames`` (the utterance's mel length) resamples the contour to that many frames, as training needs.
    """
    import pyworld

    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"extract_f0: expected a non-empty mono waveform, got shape {np.shape(wav)}")
    frame_period = hop_size * 1000.0 / sample_rate
    f0, t = pyworld.harvest(wav, sample_rate, frame_period=frame_period)
    if np.sum(f0 != 0) < 5:  # harvest failed; the reference retries with dio
        f0, t = pyworld.dio(wav, sample_rate, frame_period=frame_period)
    f0 = pyworld.stonemask(wav, f0, t, sample_rate)
    if num_frames is not None:
        f0 = resize_linear(f0, int(num_frames))
    return f0.astype(np.float32)
