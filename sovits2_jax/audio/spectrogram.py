"""GPT-SoVITS linear spectrogram and log-mel (``spectrogram_torch`` / ``spec_to_mel_torch`` semantics).

The waveform is reflect-padded by (n_fft - hop) / 2 on each side, framed without centring, windowed with a
periodic Hann window, and the magnitude is sqrt(re^2 + im^2 + 1e-6). Output layout is (batch, frames, bins).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

MAGNITUDE_EPS = 1e-6


def hann_window(win_size: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    n = np.arange(win_size, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_size)).astype(np.float32)


def num_frames(num_samples: int, n_fft: int, hop_size: int) -> int:
    """Frames produced for ``num_samples`` samples (after the (n_fft - hop) / 2 reflect padding)."""
    pad = (n_fft - hop_size) // 2
    return (num_samples + 2 * pad - n_fft) // hop_size + 1


def linear_spectrogram(wav: jax.Array, *, n_fft: int = 2048, hop_size: int = 640, win_size: int = 2048) -> jax.Array:
    """Magnitude spectrogram of wav [B, N] (or [N]) -> [B, frames, n_fft // 2 + 1] in float32."""
    wav = jnp.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise ValueError(f"linear_spectrogram expects wav [batch, samples], got shape {wav.shape}")
    if win_size > n_fft:
        raise ValueError(f"win_size {win_size} must not exceed n_fft {n_fft}")
    pad = (n_fft - hop_size) // 2
    if wav.shape[1] <= pad:
        raise ValueError(f"waveform of {wav.shape[1]} samples is too short for reflect padding {pad}")
    x = jnp.pad(wav.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
    frames = num_frames(wav.shape[1], n_fft, hop_size)
    if frames < 1:
        raise ValueError(f"waveform of {wav.shape[1]} samples gives no frame with n_fft {n_fft}")
    window = np.zeros(n_fft, np.float32)
    left = (n_fft - win_size) // 2  # torch.stft centres a shorter window inside n_fft
    window[left : left + win_size] = hann_window(win_size)
    idx = np.arange(frames)[:, None] * hop_size + np.arange(n_fft)[None, :]
    spec = jnp.fft.rfft(x[:, idx] * window, axis=-1)
    return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + MAGNITUDE_EPS)


@functools.lru_cache(maxsize=8)
def mel_basis(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """librosa's slaney-normalised mel filterbank [num_mels, n_fft // 2 + 1] (float32)."""
    import librosa

    return librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def spec_to_mel(
    spec: jax.Array, *, sampling_rate: int = 32000, n_fft: int = 2048, num_mels: int = 128, fmin: float = 0.0,
    fmax: float | None = None,
) -> jax.Array:  # fmt: skip
    """log(clamp(mel @ spec, 1e-5)) for spec [B, frames, bins] -> [B, frames, num_mels]."""
    basis = jnp.asarray(mel_basis(sampling_rate, n_fft, num_mels, fmin, fmax))
    if spec.shape[-1] != basis.shape[1]:
        raise ValueError(f"spectrogram has {spec.shape[-1]} bins, mel basis expects {basis.shape[1]}")
    mel = jnp.einsum("btf,mf->btm", spec, basis, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, 1e-5))


def mel_spectrogram(
    wav: jax.Array, *, sampling_rate: int = 32000, n_fft: int = 2048, hop_size: int = 640, win_size: int = 2048,
    num_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
) -> jax.Array:  # fmt: skip
    """Log-mel of wav [B, N] -> [B, frames, num_mels] (``mel_spectrogram_torch``)."""
    spec = linear_spectrogram(wav, n_fft=n_fft, hop_size=hop_size, win_size=win_size)
    return spec_to_mel(spec, sampling_rate=sampling_rate, n_fft=n_fft, num_mels=num_mels, fmin=fmin, fmax=fmax)
