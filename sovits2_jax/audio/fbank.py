"""Kaldi-compatible log mel filterbank (``compute-fbank-feats``) in vectorised numpy.

Defaults are what CAM++ (campplus.onnx) expects: 16 kHz, 80 bins, 25 ms / 10 ms frames, povey window,
pre-emphasis 0.97, DC removal, snip_edges, no dither, no energy column.
"""

from __future__ import annotations

import functools

import numpy as np

_EPS = float(np.finfo(np.float32).eps)


def _kaldi_mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(freq / 700.0)


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> np.ndarray:
    """Triangular Kaldi mel filters [n_fft // 2 + 1, num_bins] in float64 (the Nyquist row is zero, as in Kaldi).

    Kaldi, kaldi-native-fbank and torchaudio evaluate these triangles in float32, which moves weights near the
    edges by up to ~1e-4 relative; we use exact arithmetic.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"fbank: bad frequency range low_freq={low_freq} high_freq={high_freq} for {sample_rate} Hz")
    mel_low, mel_high = _kaldi_mel(np.float64(low_freq)), _kaldi_mel(np.float64(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + delta * np.arange(num_bins)
    center, right = left + delta, left + 2 * delta
    mel = _kaldi_mel(np.arange(n_fft // 2) * (sample_rate / n_fft))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = np.maximum(np.minimum(up, down), 0.0)
    return np.concatenate([weights, np.zeros((1, num_bins))], axis=0)


def povey_window(length: int) -> np.ndarray:
    n = np.arange(length)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85


def frame_signal(wav: np.ndarray, frame_length: int, frame_shift: int) -> np.ndarray:
    """snip_edges framing: [num_frames, frame_length] (num_frames = 0 when the signal is too short)."""
    num_frames = 0 if len(wav) < frame_length else 1 + (len(wav) - frame_length) // frame_shift
    if num_frames == 0:
        return np.zeros((0, frame_length), dtype=wav.dtype)
    idx = np.arange(frame_length)[None, :] + frame_shift * np.arange(num_frames)[:, None]
    return wav[idx]


def fbank(
    wav: np.ndarray, *, sample_rate: int = 16000, num_mel_bins: int = 80, frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0, preemph: float = 0.97, low_freq: float = 20.0, high_freq: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Log mel filterbank [num_frames, num_mel_bins] float32 of a mono waveform (any scale, used as given)."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"fbank: expected a mono 1-D waveform, got shape {wav.shape}")
    frame_length = int(sample_rate * frame_length_ms / 1000)
    frame_shift = int(sample_rate * frame_shift_ms / 1000)
    n_fft = 1 << (frame_length - 1).bit_length()
    frames = frame_signal(wav, frame_length, frame_shift)
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1.0 - preemph), frames[:, 1:] - preemph * frames[:, :-1]], axis=1)
    frames = frames * povey_window(frame_length)
    spectrum = np.fft.rfft(frames, n=n_fft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, low_freq, high_freq)
    return np.log(np.maximum(mel, _EPS)).astype(np.float32)


def campplus_features(wav16k: np.ndarray) -> np.ndarray:
    """CAM++ input for one utterance: 80-bin fbank with the time mean removed, [T, 80] float32."""
    feats = fbank(wav16k)
    return feats - feats.mean(axis=0, keepdims=True)
