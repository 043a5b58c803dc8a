"""Sample-rate conversion (soxr, high quality)."""

from __future__ import annotations

import numpy as np


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono or [time, channels] float waveform; returns float32 (the input itself if rates match)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_sr} -> {target_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    import soxr

    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32)
