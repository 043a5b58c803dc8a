"""HiFT's neural-source-filter excitation: F0 predictor, SineGen2 harmonics and the harmonic-merge source module.

Randomness (initial harmonic phases, additive noise) comes from an explicit ``rng``; ``rng=None`` draws none (zero
phases, zero noise), which is what deterministic tests and parity use. The phase is integrated at the mel-frame
rate and linearly interpolated back to samples as CosyVoice2's ``SineGen2`` does with torch's ``interpolate``.
It reaches tens of thousands of radians, where one float32 rounding moves ``sin`` by ~1e-3, so the arithmetic
reproduces torch's CPU rounding step by step: correctly rounded division (XLA's CPU division is not), a running
sum as exact as torch's double-accumulated ``cumsum``, and the fused multiply-adds of torch's interpolation kernel.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.nn.layers import Conv1d, Linear, zero_after
from sovits2_jax.nn.weight_norm import WeightNorm


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    c = a * 4097.0  # Veltkamp split of a float32 into two 12-bit halves
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """p, e with p = fl(a * b) and a * b = p + e exactly (Dekker; no FMA needed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def divide_rn(a: jax.Array, b: jax.Array) -> jax.Array:
    """a / b correctly rounded (as torch and IEEE divide); XLA's CPU division may be off by an ulp."""
    q = a / b
    p, e = _two_prod(q, b)
    return q + ((a - p) - e) / b


def fma_rn(a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """a * b + c with one rounding (what torch's CPU kernels compute with FMA instructions)."""
    p, e = _two_prod(a, b)
    s, t = _two_sum(p, c)
    return s + (t + e)


def compensated_cumsum(x: jax.Array, axis: int) -> jax.Array:
    """Cumulative sum rounded once from (nearly) exact partial sums: float32 results equal to a float64 running
    sum cast to float32 (torch's CPU cumsum), independent of the parallel scan order."""

    def combine(a, b):
        s, e = _two_sum(a[0], b[0])
        e = e + (a[1] + b[1])
        hi = s + e
        return hi, e - (hi - s)

    hi, _ = jax.lax.associative_scan(combine, (x, jnp.zeros_like(x)), axis=axis)
    return hi


def _interp_plan(in_size: int, scale_factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of torch's ``interpolate(mode='linear', align_corners=False, scale_factor=s)``."""
    out_size = math.floor(in_size * scale_factor)
    if out_size <= 0:
        raise ValueError(f"interpolate: {in_size} samples scaled by {scale_factor} leaves no output")
    scale = np.float32(1.0 / scale_factor)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    # torch's CPU kernel evaluates scale * (i + 0.5) - 0.5 as one fused multiply-add (a single rounding).
    real = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0.0))
    i0 = real.astype(np.int64)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = np.clip(real - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    return i0, i1, w0, w1


def interpolate_linear(
    x: jax.Array, scale_factor: float, axis: int = 1, lengths: jax.Array | None = None
) -> jax.Array:
    """torch ``F.interpolate(mode='linear', scale_factor=...)`` along ``axis`` (static sizes).

    ``lengths`` [B] (x [B, T, ...], axis 1): row b is treated as its first ``lengths[b]`` entries, so its outputs
    up to ``lengths[b] * scale_factor`` equal interpolating that row alone (the right edge clamps there).
    """
    axis = axis % x.ndim
    i0, i1, w0, w1 = _interp_plan(x.shape[axis], scale_factor)
    shape = [1] * x.ndim
    shape[axis] = len(i0)
    a = jnp.take(x, jnp.asarray(i0), axis=axis)
    if lengths is None:
        b = jnp.take(x, jnp.asarray(i1), axis=axis)
    else:
        if axis != 1:
            raise ValueError("interpolate_linear: per-row lengths need the batch on axis 0 and time on axis 1")
        last = jnp.asarray(lengths, jnp.int32)[:, None] - 1
        j0 = jnp.asarray(i0, jnp.int32)[None]
        rows = jnp.where(j0 < last, j0 + 1, j0)  # [B, out]
        b = jnp.take_along_axis(x, rows.reshape(*rows.shape, *([1] * (x.ndim - 2))), axis=1)
    # torch's CPU kernel: fma(x0, w0, x1 * w1)
    return fma_rn(a, jnp.asarray(w0).reshape(shape), b * jnp.asarray(w1).reshape(shape))


def sine_gen2(
    f0: jax.Array,
    *,
    sampling_rate: int,
    upsample_scale: int,
    harmonic_num: int,
    sine_amp: float,
    noise_std: float,
    voiced_threshold: float,
    rng: jax.Array | None = None,
    lengths: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Harmonic sines of a sample-rate F0 contour f0 [B, L] (Hz) -> (sines [B, L, H+1], uv [B, L, 1]).

    Unvoiced samples (f0 <= threshold) carry only noise of std sine_amp/3; voiced ones sine + noise of noise_std.
    ``lengths`` [B]: each row's real length in frames (of ``upsample_scale`` samples); its first
    ``lengths[b] * upsample_scale`` samples then equal the row run alone, whatever padding follows.
    """
    f0 = f0.astype(jnp.float32)[..., None]
    harmonics = jnp.arange(1, harmonic_num + 2, dtype=jnp.float32)
    rad = jnp.remainder(divide_rn(f0 * harmonics, jnp.float32(sampling_rate)), 1.0)
    if rng is not None:
        phase_key, noise_key = jax.random.split(rng)
        initial = jax.random.uniform(phase_key, (f0.shape[0], harmonic_num + 1), jnp.float32)
        rad = rad.at[:, 0, 1:].add(initial[:, 1:])  # no random phase for the fundamental
    rad = interpolate_linear(rad, 1.0 / upsample_scale, axis=1)
    phase = compensated_cumsum(rad, axis=1) * (2.0 * np.pi)
    # The barrier stops XLA from folding the two constant scalings into one (a different rounding).
    phase = jax.lax.optimization_barrier(phase) * upsample_scale
    phase = interpolate_linear(phase, float(upsample_scale), axis=1, lengths=lengths)
    sines = jnp.sin(phase) * sine_amp
    if sines.shape[1] != f0.shape[1]:
        raise ValueError(f"sine_gen2: {f0.shape[1]} samples are not a multiple of the upsample scale {upsample_scale}")
    uv = (f0 > voiced_threshold).astype(jnp.float32)
    if rng is None:
        return sines * uv, uv
    noise_amp = uv * noise_std + (1.0 - uv) * (sine_amp / 3.0)
    noise = noise_amp * jax.random.normal(noise_key, sines.shape, jnp.float32)
    return sines * uv + noise, uv


@dataclasses.dataclass(frozen=True)
class SineGen:
    """SineGen2's settings (CosyVoice2's nb_harmonics, nsf_alpha, nsf_sigma, nsf_voiced_threshold); calling it runs
    ``sine_gen2`` with them."""

    sampling_rate: int
    upsample_scale: int
    harmonic_num: int = 8
    sine_amp: float = 0.1
    noise_std: float = 0.003
    voiced_threshold: float = 10.0

    def __call__(
        self, f0: jax.Array, rng: jax.Array | None = None, lengths: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        return sine_gen2(f0, **dataclasses.asdict(self), rng=rng, lengths=lengths)


class SourceModule(nnx.Module):
    """SourceModuleHnNSF2: SineGen2 harmonics merged by Linear(H+1 -> 1) + tanh into one excitation."""

    def __init__(self, sine: SineGen, *, rngs: nnx.Rngs):
        self.sine = sine
        self.merge = Linear(sine.harmonic_num + 1, 1, axes=("harmonics", None), rngs=rngs)

    def __call__(self, f0: jax.Array, rng: jax.Array | None = None, lengths: jax.Array | None = None) -> jax.Array:
        """Sample-rate F0 [B, L] -> excitation [B, L] (``lengths``: real frames per row, see ``sine_gen2``)."""
        sines, _ = self.sine(f0, rng, lengths)
        sines = jax.lax.stop_gradient(sines)  # the reference builds them under no_grad
        return jnp.tanh(self.merge(sines))[..., 0]


class F0Predictor(nnx.Module):
    """ConvRNNF0Predictor: 5 weight-normed Conv1d(k3) + ELU, Linear -> |.|; mel [B, T, C] -> F0 [B, T]."""

    def __init__(
        self,
        in_channels: int = 80,
        cond_channels: int = 512,
        num_class: int = 1,
        *,
        num_layers: int = 5,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if num_class != 1:
            raise ValueError(f"F0Predictor: only num_class=1 is supported (CosyVoice2), got {num_class}")
        chans = [in_channels] + [cond_channels] * num_layers
        self.convs = nnx.List(
            [
                WeightNorm(Conv1d(chans[i], chans[i + 1], 3, padding=1, dtype=dtype, rngs=rngs))
                for i in range(num_layers)
            ]
        )
        self.classifier = Linear(cond_channels, num_class, axes=("conv_out", None), rngs=rngs)

    def __call__(self, mel: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """mel [B, T, C] -> F0 [B, T]; with ``lengths`` [B] each row's first lengths[b] frames equal the row alone."""
        x = mel
        for conv in self.convs:
            x = jax.nn.elu(zero_after(conv(zero_after(x, lengths)), lengths))
        return jnp.abs(self.classifier(x.astype(jnp.float32))[..., 0])

