"""Whisper log-mel spectrogram (the S3 speech tokenizer's input) in numpy.

16 kHz audio, n_fft 400, hop 160, periodic Hann window, centred reflect-padded STFT with the last frame dropped,
slaney mel filters, log10 clamped at 1e-10, floored 8 decades below the maximum, then (x + 4) / 4.
"""

from __future__ import annotations

import functools

import numpy as np

N_FFT = 400
HOP = 160
SAMPLE_RATE = 16000


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


@functools.lru_cache(maxsize=4)
def whisper_mel_filters(n_mels: int = 128) -> np.ndarray:
    """Slaney-normalised mel filters [n_mels, 201] float32 (what librosa.filters.mel gives and whisper ships)."""
    return slaney_mel_filters(SAMPLE_RATE, N_FFT, n_mels)


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) (slaney scale and area normalisation, 0 Hz to Nyquist), float32."""
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def _hann_window_f32() -> np.ndarray:
    """Periodic Hann window evaluated in float32 like torch.hann_window: weak bins sit 8 decades below the peak,
    where the window's sidelobes (and so its rounding) show."""
    f32 = np.float32
    return f32(0.5) - f32(0.5) * np.cos(np.arange(N_FFT, dtype=f32) * f32(2 * np.pi / N_FFT))


def log_mel_spectrogram(wav16k: np.ndarray, n_mels: int = 128) -> np.ndarray:
    """Log-mel [n_mels, len // 160] float32 of a mono 16 kHz waveform (channels first, like the reference)."""
    wav = np.asarray(wav16k, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"whisper mel: expected a mono 1-D waveform, got shape {wav.shape}")
    if len(wav) <= N_FFT // 2:
        raise ValueError(f"whisper mel: waveform of {len(wav)} samples is too short (need > {N_FFT // 2})")
    padded = np.pad(wav.astype(np.float64), N_FFT // 2, mode="reflect")
    num_frames = len(wav) // HOP  # torch.stft gives one more; the reference drops it
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(num_frames)[:, None]
    window = _hann_window_f32().astype(np.float64)
    spectrum = np.fft.rfft(padded[idx] * window, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = whisper_mel_filters(n_mels).astype(np.float64) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
