"""STFT / iSTFT with torch.stft / torch.istft semantics (centred, reflect-padded, periodic Hann by default).

Layout: signals [..., T]; spectra [..., frames, n_fft // 2 + 1] (time before frequency, unlike torch's
[..., freq, frames]). Works on numpy or JAX arrays inside jit; frame counts are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def hann_window(length: int, *, periodic: bool = True) -> np.ndarray:
    """torch.hann_window (periodic) / scipy get_window('hann', fftbins=True), float32."""
    if length <= 0:
        raise ValueError(f"hann_window: length must be positive, got {length}")
    if length == 1:
        return np.ones(1, np.float32)
    denom = length if periodic else length - 1
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / denom)).astype(np.float32)


def _full_window(n_fft: int, win_length: int | None, window) -> np.ndarray | jax.Array:
    """The window zero-padded (centred) to n_fft, as torch does when win_length < n_fft."""
    win_length = n_fft if win_length is None else win_length
    if window is None:
        window = hann_window(win_length)
    if window.shape != (win_length,):
        raise ValueError(f"stft: window has shape {tuple(window.shape)}, expected ({win_length},)")
    if win_length > n_fft:
        raise ValueError(f"stft: win_length={win_length} exceeds n_fft={n_fft}")
    left = (n_fft - win_length) // 2
    xp = np if isinstance(window, np.ndarray) else jnp
    return xp.pad(window, (left, n_fft - win_length - left))


def num_frames(num_samples: int, n_fft: int, hop_length: int, *, center: bool = True) -> int:
    """Frames torch.stft yields for a signal of ``num_samples``."""
    padded = num_samples + (2 * (n_fft // 2) if center else 0)
    if padded < n_fft:
        raise ValueError(f"stft: signal of {num_samples} samples is shorter than n_fft={n_fft}")
    return 1 + (padded - n_fft) // hop_length


def stft(
    x: jax.Array, n_fft: int, hop_length: int, win_length: int | None = None, window=None, *, center: bool = True,
    pad_mode: str = "reflect",
) -> jax.Array:  # fmt: skip
    """Complex one-sided STFT of x [..., T] -> [..., frames, n_fft // 2 + 1] (torch.stft, normalized=False)."""
    x = jnp.asarray(x)
    win = jnp.asarray(_full_window(n_fft, win_length, window), x.dtype)
    if center:
        pad = n_fft // 2
        if pad_mode == "reflect" and x.shape[-1] <= pad:
            raise ValueError(f"stft: reflect padding needs more than {pad} samples, got {x.shape[-1]}")
        mode = {"reflect": "reflect", "constant": "constant", "replicate": "edge"}.get(pad_mode)
        if mode is None:
            raise ValueError(f"stft: unknown pad_mode {pad_mode!r}")
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=mode)
    frames = num_frames(x.shape[-1], n_fft, hop_length, center=False)
    index = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    return jnp.fft.rfft(x[..., index] * win, axis=-1)


def magnitude(spec: jax.Array) -> jax.Array:
    """|spec| with a zero (not NaN) gradient at exact zeros (padded silence gives those)."""
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    positive = power > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, power, 1.0)), 0.0)


def overlap_add(frames: jax.Array, hop_length: int) -> jax.Array:
    """Sums frames [..., N, L] placed every ``hop_length`` samples -> [..., (N - 1) * hop + L]."""
    n, length = frames.shape[-2:]
    total = (n - 1) * hop_length + length
    if length % hop_length == 0:
        # Split each frame into hop-sized pieces; piece j of frame i lands in output block i + j.
        r = length // hop_length
        pieces = frames.reshape(*frames.shape[:-1], r, hop_length)
        batch_pad = [(0, 0)] * (frames.ndim - 2)
        out = sum(jnp.pad(pieces[..., j, :], [*batch_pad, (j, r - 1 - j), (0, 0)]) for j in range(r))
        return out.reshape(*frames.shape[:-2], total)
    index = np.arange(n)[:, None] * hop_length + np.arange(length)[None, :]
    out = jnp.zeros((*frames.shape[:-2], total), frames.dtype)
    return out.at[..., index].add(frames)


def istft(
    spec: jax.Array,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window=None,
    *,
    center: bool = True,
    length: int | None = None,
    frame_lengths: jax.Array | None = None,
) -> jax.Array:
    """Inverse of ``stft``: spec [..., frames, n_fft // 2 + 1] -> [..., samples] (torch.istft, onesided).

    ``frame_lengths`` [...] (one per signal): only the first ``frame_lengths`` frames of each signal exist, so its
    first ``(frame_lengths - 1) * hop_length`` samples (centred) equal ``istft`` of those frames alone; the samples
    after them are zero.
    """
    if spec.shape[-1] != n_fft // 2 + 1:
        raise ValueError(f"istft: spectrum has {spec.shape[-1]} bins, expected n_fft // 2 + 1 = {n_fft // 2 + 1}")
    win_np = _full_window(n_fft, win_length, window)
    n = spec.shape[-2]
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1)
    win = jnp.asarray(win_np, frames.dtype)
    if not isinstance(win_np, np.ndarray):
        raise TypeError("istft: the window must be a concrete numpy array (its overlap envelope is precomputed)")
    if frame_lengths is not None:
        return _istft_rows(frames, win, hop_length, n_fft, center, length, jnp.asarray(frame_lengths))
    signal = overlap_add(frames * win, hop_length)
    envelope = np.zeros((n - 1) * hop_length + n_fft, np.float32)
    index = np.arange(n)[:, None] * hop_length + np.arange(n_fft)
    np.add.at(envelope, index.ravel(), np.tile(np.square(win_np.astype(np.float32)), n))
    start = n_fft // 2 if center else 0
    if length is not None:
        end = start + length
    else:
        end = signal.shape[-1] - (n_fft // 2 if center else 0)
    envelope = envelope[start:end]
    if envelope.size and np.min(np.abs(envelope)) < 1e-11:
        raise ValueError("istft: window overlap-add is zero somewhere (NOLA fails); use a smaller hop_length")
    signal = signal[..., start:end] / jnp.asarray(envelope, signal.dtype)
    if length is not None and signal.shape[-1] < length:
        signal = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, length - signal.shape[-1])])
    return signal


def _istft_rows(frames, win, hop_length, n_fft, center, length, frame_lengths):
    """istft's overlap-add with each signal's own frame count: later frames and their window envelope drop out."""
    exists = (jnp.arange(frames.shape[-2]) < frame_lengths[..., None]).astype(frames.dtype)[..., None]
    signal = overlap_add(frames * win * exists, hop_length)
    envelope = overlap_add(jnp.square(win) * exists, hop_length)
    start = n_fft // 2 if center else 0
    end = signal.shape[-1] - (n_fft // 2 if center else 0) if length is None else start + length
    signal, envelope = signal[..., start:end], envelope[..., start:end]
    covered = envelope > 1e-11
    signal = jnp.where(covered, signal / jnp.where(covered, envelope, 1.0), 0.0)
    if length is not None and signal.shape[-1] < length:
        signal = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, length - signal.shape[-1])])
    return signal
