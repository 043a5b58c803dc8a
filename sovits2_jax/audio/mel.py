"""Matcha-TTS ``mel_spectrogram`` as CosyVoice2 uses it (flow targets and prompt mels), in numpy and in JAX.

Waveform [N] or [B, N] at 24 kHz -> log-mel [frames, 80] / [B, frames, 80] (time before mel bins): reflect pad
(n_fft - hop) / 2 on both sides, uncentred frames, periodic Hann window, |STFT| = sqrt(re^2 + im^2 + 1e-9),
librosa's Slaney mel basis, log(max(x, 1e-5)).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sovits2_jax.audio.stft import hann_window
from sovits2_jax.audio.stft import stft as _stft

MAGNITUDE_EPS = 1e-9
LOG_CLIP = 1e-5


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """CosyVoice2's values (cosyvoice2.yaml ``feat_extractor``)."""

    n_fft: int = 1920
    num_mels: int = 80
    sampling_rate: int = 24000
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0.0
    fmax: float | None = 8000.0

    def __post_init__(self):
        if self.win_size > self.n_fft:
            raise ValueError(f"mel: win_size={self.win_size} exceeds n_fft={self.n_fft}")
        if self.hop_size <= 0 or self.n_fft <= 0 or self.num_mels <= 0:
            raise ValueError(f"mel: n_fft, hop_size and num_mels must be positive, got {self}")


@functools.lru_cache(maxsize=16)
def mel_filterbank(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """[num_mels, n_fft // 2 + 1] float32 Slaney-normalised mel filters (librosa.filters.mel)."""
    import librosa

    basis = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


def _window(cfg: MelConfig) -> np.ndarray:
    window = np.zeros(cfg.n_fft, np.float32)
    left = (cfg.n_fft - cfg.win_size) // 2
    window[left : left + cfg.win_size] = hann_window(cfg.win_size)
    return window


def num_frames(num_samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Frames for ``num_samples`` samples (num_samples // hop when n_fft - hop is even and divides cleanly)."""
    pad = (cfg.n_fft - cfg.hop_size) // 2
    return (num_samples + 2 * pad - cfg.n_fft) // cfg.hop_size + 1


def _check(wav_shape: tuple[int, ...], cfg: MelConfig) -> None:
    pad = (cfg.n_fft - cfg.hop_size) // 2
    if len(wav_shape) not in (1, 2):
        raise ValueError(f"mel_spectrogram expects wav [samples] or [batch, samples], got shape {wav_shape}")
    if wav_shape[-1] <= pad or num_frames(wav_shape[-1], cfg) < 1:
        raise ValueError(f"mel_spectrogram: {wav_shape[-1]} samples are too short for n_fft={cfg.n_fft}")


def mel_spectrogram_np(wav: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """numpy (data preparation): log-mel [..., frames, num_mels] float32."""
    wav = np.asarray(wav, np.float32)
    _check(wav.shape, cfg)
    pad = (cfg.n_fft - cfg.hop_size) // 2
    x = np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(pad, pad)], mode="reflect")
    frames = num_frames(wav.shape[-1], cfg)
    # a strided view instead of a gathered copy of every frame (same values, half the time)
    framed = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft, axis=-1)[..., :: cfg.hop_size, :][..., :frames, :]
    spec = np.fft.rfft(framed * _window(cfg), axis=-1)
    mag = np.sqrt(spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2 + np.float32(MAGNITUDE_EPS))
    basis = mel_filterbank(cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax)
    mel = mag.astype(np.float32) @ basis.T
    return np.log(np.maximum(mel, np.float32(LOG_CLIP))).astype(np.float32)


def mel_spectrogram(wav: jax.Array, cfg: MelConfig = MelConfig()) -> jax.Array:
    """JAX (training-time, jit-able): log-mel [..., frames, num_mels] float32."""
    wav = jnp.asarray(wav, jnp.float32)
    _check(wav.shape, cfg)
    pad = (cfg.n_fft - cfg.hop_size) // 2
    x = jnp.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(pad, pad)], mode="reflect")
    spec = _stft(x, cfg.n_fft, cfg.hop_size, cfg.n_fft, _window(cfg), center=False)
    mag = jnp.sqrt(jnp.square(spec.real) + jnp.square(spec.imag) + MAGNITUDE_EPS)
    basis = jnp.asarray(mel_filterbank(cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax))
    mel = jnp.einsum("...tf,mf->...tm", mag, basis, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, LOG_CLIP))


def pad_to_multiple(wav: np.ndarray, multiple: int = 960) -> np.ndarray:
    """Right-pads the last axis with zeros to a multiple of ``multiple`` samples (960 = one 25 Hz token at 24 kHz)."""
    wav = np.asarray(wav)
    extra = (-wav.shape[-1]) % multiple
    return np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, extra)]) if extra else wav
