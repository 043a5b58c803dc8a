"""Integrated loudness (ITU-R BS.1770-4, LUFS) and loudness normalisation (GPT-SoVITS2 uses -23 LUFS)."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

TARGET_LUFS = -23.0


def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 biquads (high shelf, then high pass), designed for any sample rate."""
    # Shelf: +4 dB above ~1.5 kHz.
    gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = np.tan(np.pi * fc / sample_rate)
    vh, vb = 10.0 ** (gain_db / 20.0), (10.0 ** (gain_db / 20.0)) ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # High pass (RLB curve) at ~38 Hz.
    q, fc = 0.5003270373238773, 38.13547087602444
    k = np.tan(np.pi * fc / sample_rate)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def integrated_loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness in LUFS of [time] or [time, channels] audio (channel weights 1).

    Returns -inf for silence; raises ValueError for audio shorter than one 400 ms gating block.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    block, step = round(0.4 * sample_rate), round(0.1 * sample_rate)
    if x.shape[0] < block:
        raise ValueError(f"loudness: {x.shape[0]} samples is shorter than one 400 ms block at {sample_rate} Hz")
    for b, a in _k_weighting(sample_rate):
        x = lfilter(b, a, x, axis=0)
    num_blocks = 1 + (x.shape[0] - block) // step
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)], axis=0)
    starts = step * np.arange(num_blocks)
    z = (csum[starts + block] - csum[starts]) / block  # mean square per block and channel
    power = z.sum(axis=1)
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10.0 * np.log10(power)
    keep = loud > -70.0
    if not keep.any():
        return float("-inf")
    relative = -0.691 + 10.0 * np.log10(power[keep].mean()) - 10.0
    keep &= loud > relative
    return float(-0.691 + 10.0 * np.log10(power[keep].mean()))


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """Scale audio to the target integrated loudness (silence and too-short audio are returned unchanged)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.shape[0] < round(0.4 * sample_rate):
        return wav
    loud = integrated_loudness(wav, sample_rate)
    if not np.isfinite(loud):
        return wav
    return (wav * np.float32(10.0 ** ((target_lufs - loud) / 20.0))).astype(np.float32)
