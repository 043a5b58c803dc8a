"""GAN discriminators of HiFi-GAN / CosyVoice2 HiFT / VITS, weight-normed, on mono waveforms [B, T].

- ``DiscriminatorP`` / ``MultiPeriodDiscriminator``: HiFi-GAN's multi-period discriminator (MPD); with
  ``scale_layers`` the MPD is preceded by a ``DiscriminatorS`` as VITS / GPT-SoVITS build theirs.
- ``DiscriminatorS``: HiFi-GAN's scale discriminator, layer table given (``HIFIGAN_S_LAYERS`` or ``VITS_S_LAYERS``).
- ``SpecDiscriminator`` / ``MultiResSpecDiscriminator``: magnitude-STFT discriminators (CosyVoice2's "mrd").
- ``MultipleDiscriminator``: CosyVoice2's MPD + multi-resolution spectrogram pair.

Each discriminator returns ``(score [B, N], feature_maps)`` with feature maps in our channels-last layout
([B, H, W, C] for 2-D, [B, T, C] for 1-D). The multi-discriminators take (real, generated) and return torch's
``(real_scores, generated_scores, real_fmaps, generated_fmaps)`` lists, running both signals as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.audio.stft import hann_window, magnitude, stft
from sovits2_jax.nn.conv2d import Conv2d
from sovits2_jax.nn.layers import Conv1d
from sovits2_jax.nn.weight_norm import WeightNorm

LRELU_SLOPE = 0.1

# (in, out, kernel, stride, groups, padding) per conv of a scale discriminator; the last row is conv_post.
HIFIGAN_S_LAYERS = (
    (1, 128, 15, 1, 1, 7),
    (128, 128, 41, 2, 4, 20),
    (128, 256, 41, 2, 16, 20),
    (256, 512, 41, 4, 16, 20),
    (512, 1024, 41, 4, 16, 20),
    (1024, 1024, 41, 1, 16, 20),
    (1024, 1024, 5, 1, 1, 2),
    (1024, 1, 3, 1, 1, 1),
)
VITS_S_LAYERS = (
    (1, 16, 15, 1, 1, 7),
    (16, 64, 41, 4, 4, 20),
    (64, 256, 41, 4, 16, 20),
    (256, 1024, 41, 4, 64, 20),
    (1024, 1024, 41, 4, 256, 20),
    (1024, 1024, 5, 1, 1, 2),
    (1024, 1, 3, 1, 1, 1),
)

Scores = list[jax.Array]
FeatureMaps = list[list[jax.Array]]


def _check_wave(y: jax.Array, who: str) -> None:
    if y.ndim != 2:
        raise ValueError(f"{who}: expected a mono waveform batch [B, T], got shape {tuple(y.shape)}")


def _conv_stack(x: jax.Array, convs, post) -> tuple[jax.Array, list[jax.Array]]:
    """Leaky-ReLU convs then ``post``: (flattened score [B, N], every layer's output as feature maps)."""
    fmap = []
    for conv in convs:
        x = jax.nn.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = post(x)
    fmap.append(x)
    return x.reshape(x.shape[0], -1), fmap


class DiscriminatorP(nnx.Module):
    """Period discriminator: the waveform folded to [T / period, period], 2-D convs along time."""

    def __init__(
        self, period: int, *, kernel_size: int = 5, stride: int = 3,
        channels: Sequence[int] = (32, 128, 512, 1024, 1024), rngs: nnx.Rngs,
    ):  # fmt: skip
        self.period = period
        pad = (kernel_size - 1) // 2
        convs, cin = [], 1
        for i, cout in enumerate(channels):
            s = stride if i < len(channels) - 1 else 1
            conv = Conv2d(cin, cout, (kernel_size, 1), stride=(s, 1), padding=(pad, 0), rngs=rngs)
            convs.append(WeightNorm(conv))
            cin = cout
        self.convs = nnx.List(convs)
        self.conv_post = WeightNorm(Conv2d(cin, 1, (3, 1), padding=(1, 0), rngs=rngs))

    def __call__(self, y: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        _check_wave(y, "DiscriminatorP")
        b, t = y.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            y = jnp.pad(y, ((0, 0), (0, n_pad)), mode="reflect")
            t += n_pad
        return _conv_stack(y.reshape(b, t // self.period, self.period, 1), self.convs, self.conv_post)


class DiscriminatorS(nnx.Module):
    """Scale discriminator: grouped strided 1-D convs over the raw waveform."""

    def __init__(self, layers: Sequence[Sequence[int]] = HIFIGAN_S_LAYERS, *, rngs: nnx.Rngs):
        if len(layers) < 2 or layers[-1][1] != 1:
            raise ValueError("DiscriminatorS: layers must end with a conv_post row producing 1 channel")
        convs = [WeightNorm(Conv1d(i, o, k, stride=s, groups=g, padding=p, rngs=rngs)) for i, o, k, s, g, p in layers]
        self.convs, self.conv_post = nnx.List(convs[:-1]), convs[-1]

    def __call__(self, y: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        _check_wave(y, "DiscriminatorS")
        return _conv_stack(y[..., None], self.convs, self.conv_post)


class SpecDiscriminator(nnx.Module):
    """2-D convs over a linear-magnitude STFT [frames, bins] (Hann window of ``win_length``, centred)."""

    def __init__(self, fft_size: int = 1024, hop_size: int = 120, win_length: int = 600, *, rngs: nnx.Rngs):
        self.fft_size, self.hop_size, self.win_length = fft_size, hop_size, win_length
        specs = [(1, 32, (3, 9), (1, 1), (1, 4))] + [(32, 32, (3, 9), (1, 2), (1, 4))] * 3
        specs.append((32, 32, (3, 3), (1, 1), (1, 1)))
        self.discriminators = nnx.List(
            [WeightNorm(Conv2d(ci, co, k, stride=s, padding=p, rngs=rngs)) for ci, co, k, s, p in specs]
        )
        self.out = WeightNorm(Conv2d(32, 1, 3, padding=1, rngs=rngs))

    def __call__(self, y: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        _check_wave(y, "SpecDiscriminator")
        window = hann_window(self.win_length)
        x = magnitude(stft(y, self.fft_size, self.hop_size, self.win_length, window))[..., None]
        return _conv_stack(x, self.discriminators, self.out)


def _run_pair(discriminators, y: jax.Array, y_hat: jax.Array) -> tuple[Scores, Scores, FeatureMaps, FeatureMaps]:
    """Runs each discriminator once on [real; generated] and splits the results."""
    if y.shape != y_hat.shape:
        raise ValueError(f"discriminator: real {tuple(y.shape)} and generated {tuple(y_hat.shape)} shapes differ")
    b = y.shape[0]
    both = jnp.concatenate([y, y_hat], axis=0)
    d_rs, d_gs, f_rs, f_gs = [], [], [], []
    for d in discriminators:
        score, fmap = d(both)
        d_rs.append(score[:b])
        d_gs.append(score[b:])
        f_rs.append([f[:b] for f in fmap])
        f_gs.append([f[b:] for f in fmap])
    return d_rs, d_gs, f_rs, f_gs


class MultiPeriodDiscriminator(nnx.Module):
    """``DiscriminatorP`` per period; with ``scale_layers`` a ``DiscriminatorS`` comes first (VITS layout)."""

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        *,
        scale_layers: Sequence[Sequence[int]] | None = None,
        channels: Sequence[int] = (32, 128, 512, 1024, 1024),
        rngs: nnx.Rngs,
    ):
        discs: list[nnx.Module] = [] if scale_layers is None else [DiscriminatorS(scale_layers, rngs=rngs)]
        discs += [DiscriminatorP(p, channels=channels, rngs=rngs) for p in periods]
        self.discriminators = nnx.List(discs)

    def __call__(self, y: jax.Array, y_hat: jax.Array):
        return _run_pair(self.discriminators, y, y_hat)


class MultiResSpecDiscriminator(nnx.Module):
    """``SpecDiscriminator`` per (fft, hop, win) resolution."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        *,
        rngs: nnx.Rngs,
    ):
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("MultiResSpecDiscriminator: fft_sizes, hop_sizes and win_lengths differ in length")
        self.discriminators = nnx.List(
            [SpecDiscriminator(f, h, w, rngs=rngs) for f, h, w in zip(fft_sizes, hop_sizes, win_lengths)]
        )

    def __call__(self, y: jax.Array, y_hat: jax.Array):
        return _run_pair(self.discriminators, y, y_hat)


class MultipleDiscriminator(nnx.Module):
    """CosyVoice2's HiFT discriminator: MPD results followed by the multi-resolution spectrogram ones."""

    def __init__(self, *, rngs: nnx.Rngs, mpd: nnx.Module | None = None, mrd: nnx.Module | None = None):
        self.mpd = mpd if mpd is not None else MultiPeriodDiscriminator(rngs=rngs)
        self.mrd = mrd if mrd is not None else MultiResSpecDiscriminator(rngs=rngs)

    def __call__(self, y: jax.Array, y_hat: jax.Array):
        a = self.mpd(y, y_hat)
        b = self.mrd(y, y_hat)
        return tuple(x + z for x, z in zip(a, b))
