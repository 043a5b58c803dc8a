"""HiFT vocoder (CosyVoice2's HiFTGenerator: neural source filter + iSTFTNet) in Flax NNX.

mel [B, T, 80] -> F0 [B, T] (``F0Predictor``) -> sample-rate F0 (nearest, x480) -> harmonic excitation
(``SourceModule``) -> ``decode(mel, source)``: weight-normed conv_pre, ConvTranspose upsamplers fused with the
source's STFT through strided source convs and Snake ResBlocks, conv_post -> log-magnitude and phase -> iSTFT ->
clip. Layout is (batch, time, channels); waveforms are [B, samples].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.audio.stft import hann_window, istft, stft
from sovits2_jax.models.config_base import ConfigBase
from sovits2_jax.models.hift_source import F0Predictor, SineGen, SourceModule
from sovits2_jax.nn.conv_transpose import ConvTranspose1d
from sovits2_jax.nn.layers import Conv1d, zero_after
from sovits2_jax.nn.snake import Snake
from sovits2_jax.nn.weight_norm import WeightNorm
from sovits2_jax.parallel.sharding import constrain

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class HiFTConfig(ConfigBase):
    """HiFTGenerator hyper-parameters; defaults are CosyVoice2's (24 kHz, 480 samples per mel frame)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512
    f0_num_layers: int = 5
    dtype: str = "float32"  # compute dtype of the convolutions; STFT, source and iSTFT stay float32

    def __post_init__(self):
        n = len(self.upsample_rates)
        checks = {
            "upsample_kernel_sizes": len(self.upsample_kernel_sizes) == n,
            "source_resblock_kernel_sizes": len(self.source_resblock_kernel_sizes) == n,
            "source_resblock_dilation_sizes": len(self.source_resblock_dilation_sizes) == n,
            "resblock_dilation_sizes": len(self.resblock_dilation_sizes) == len(self.resblock_kernel_sizes),
            "base_channels": self.base_channels % (2**n) == 0,
            "dtype": self.dtype in _DTYPES,
            "sampling_rate": self.sampling_rate != 22050,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"HiFTConfig: inconsistent {bad[0]} (one entry per upsample stage; base_channels divisible by "
                f"2**stages; dtype in {sorted(_DTYPES)}; 22050 Hz would need CosyVoice1's SineGen source)"
            )

    @property
    def upsample_scale(self) -> int:
        """Samples per mel frame."""
        return math.prod(self.upsample_rates) * self.hop_len

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]


def validate(section, prefix: str = "config.model") -> None:
    """Checks a HiFT model section (HiFTConfig fields); ConfigError starting with ``prefix``."""
    HiFTConfig.from_section(section, prefix)


class ResBlock(nnx.Module):
    """Snake -> dilated conv -> Snake -> conv, residual, once per dilation (HiFT / BigVGAN ResBlock)."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], *, dtype=None, rngs: nnx.Rngs):
        def conv(d):
            pad = (kernel_size * d - d) // 2
            return WeightNorm(Conv1d(channels, channels, kernel_size, dilation=d, padding=pad, dtype=dtype, rngs=rngs))

        self.convs1 = nnx.List([conv(d) for d in dilations])
        self.convs2 = nnx.List([conv(1) for _ in dilations])
        self.activations1 = nnx.List([Snake(channels, rngs=rngs) for _ in dilations])
        self.activations2 = nnx.List([Snake(channels, rngs=rngs) for _ in dilations])

    def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """x [B, T, C] zero past ``lengths`` (None: every frame real) -> the same, still zero past them."""
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + zero_after(c2(a2(zero_after(c1(a1(x)), lengths))), lengths)
        return x


class HiFTGenerator(nnx.Module):
    """CosyVoice2 HiFT: ``__call__`` (training: waveform and F0), ``inference``, ``decode(mel, source)``."""

    def __init__(self, config: HiFTConfig, *, rngs: nnx.Rngs):
        self.config = c = config
        dt = c.compute_dtype if c.dtype != "float32" else None
        self.f0_predictor = F0Predictor(
            c.in_channels, c.f0_cond_channels, num_layers=c.f0_num_layers, dtype=dt, rngs=rngs
        )
        sine = SineGen(
            c.sampling_rate, c.upsample_scale, c.nb_harmonics, c.nsf_alpha, c.nsf_sigma, c.nsf_voiced_threshold
        )
        self.source = SourceModule(sine, rngs=rngs)
        self.conv_pre = WeightNorm(Conv1d(c.in_channels, c.base_channels, 7, padding=3, dtype=dt, rngs=rngs))
        ups = []
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            cin, cout = c.base_channels // 2**i, c.base_channels // 2 ** (i + 1)
            ups.append(WeightNorm(ConvTranspose1d(cin, cout, k, stride=u, padding=(k - u) // 2, dtype=dt, rngs=rngs)))
        self.ups = nnx.List(ups)

        spec_channels = c.n_fft + 2
        down_rates = [1, *list(c.upsample_rates[::-1][:-1])]
        cum = [math.prod(down_rates[: i + 1]) for i in range(len(down_rates))][::-1]
        downs, source_blocks = [], []
        for i, (u, k, d) in enumerate(zip(cum, c.source_resblock_kernel_sizes, c.source_resblock_dilation_sizes)):
            ch = c.base_channels // 2 ** (i + 1)
            if u == 1:
                downs.append(Conv1d(spec_channels, ch, 1, dtype=dt, rngs=rngs))
            else:
                downs.append(Conv1d(spec_channels, ch, u * 2, stride=u, padding=u // 2, dtype=dt, rngs=rngs))
            source_blocks.append(ResBlock(ch, k, d, dtype=dt, rngs=rngs))
        self.source_downs = nnx.List(downs)
        self.source_resblocks = nnx.List(source_blocks)

        blocks = []
        for i in range(len(c.upsample_rates)):
            ch = c.base_channels // 2 ** (i + 1)
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                blocks.append(ResBlock(ch, k, d, dtype=dt, rngs=rngs))
        self.resblocks = nnx.List(blocks)
        self.conv_post = WeightNorm(Conv1d(ch, spec_channels, 7, padding=3, dtype=dt, rngs=rngs))

    # -- pieces ---------------------------------------------------------------------------------------------
    def predict_f0(self, mel: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """mel [B, T, C] -> F0 [B, T] in Hz."""
        self._check_mel(mel)
        return self.f0_predictor(mel, lengths)

    def make_source(self, f0: jax.Array, rng: jax.Array | None = None, lengths: jax.Array | None = None) -> jax.Array:
        """Frame-rate F0 [B, T] -> excitation [B, T * upsample_scale] (nearest upsampling, then SineGen2)."""
        f0_up = jnp.repeat(f0, self.config.upsample_scale, axis=1)
        return self.source(f0_up, rng, lengths)

    def decode(self, mel: jax.Array, source: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """mel [B, T, C] + excitation [B, T * upsample_scale] (or [B, L, 1]) -> waveform [B, T * upsample_scale].

        ``lengths`` [B]: row b is a padded mel of ``lengths[b]`` real frames; its first ``lengths[b] *
        upsample_scale`` samples then equal decoding the row alone (every convolution sees zeros past the row's
        end, the source STFT reflects at it, the iSTFT ends there) and the samples after them are zero.
        """
        c = self.config
        self._check_mel(mel)
        if source.ndim == 3 and source.shape[-1] == 1:
            source = source[..., 0]
        expected = mel.shape[1] * c.upsample_scale
        if source.ndim != 2 or source.shape != (mel.shape[0], expected):
            raise ValueError(
                f"HiFT decode: source must be [B, T * {c.upsample_scale}] = {(mel.shape[0], expected)}, "
                f"got {tuple(source.shape)}"
            )
        window = hann_window(c.n_fft)
        source = source.astype(jnp.float32)
        spec_len = None  # source STFT frames per row (the decoder's frame rate)
        if lengths is not None:
            lengths = jnp.asarray(lengths, jnp.int32)
            source = _reflect_past_end(source, lengths * c.upsample_scale)
            spec_len = lengths * (c.upsample_scale // c.hop_len) + 1
        spec = stft(source, c.n_fft, c.hop_len, c.n_fft, window)
        s_spec = zero_after(jnp.concatenate([spec.real, spec.imag], axis=-1), spec_len)

        dtype = c.compute_dtype
        x = zero_after(self.conv_pre(zero_after(mel.astype(dtype), lengths)), lengths)
        n_kernels = len(c.resblock_kernel_sizes)
        stage_len = lengths
        for i, up in enumerate(self.ups):
            x = up(jax.nn.leaky_relu(x, c.lrelu_slope))
            stage_len = None if lengths is None else stage_len * c.upsample_rates[i]
            if i == len(self.ups) - 1:
                x = jnp.pad(x, ((0, 0), (1, 0), (0, 0)), mode="reflect")
                stage_len = spec_len
            x = zero_after(x, stage_len)
            si = zero_after(self.source_downs[i](s_spec.astype(dtype)), stage_len)
            x = x + self.source_resblocks[i](si, stage_len)
            xs = self.resblocks[i * n_kernels](x, stage_len)
            for j in range(1, n_kernels):
                xs = xs + self.resblocks[i * n_kernels + j](x, stage_len)
            x = constrain(xs / n_kernels, ("batch", "length", "channels"))
        x = self.conv_post(jax.nn.leaky_relu(x, 0.01)).astype(jnp.float32)  # torch's default slope here
        bins = c.n_fft // 2 + 1
        magnitude = jnp.minimum(jnp.exp(x[..., :bins]), 1e2)
        phase = jnp.sin(x[..., bins:])  # sin as in the reference (redundant, but it defines the function)
        spec_out = jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))
        wav = istft(spec_out, c.n_fft, c.hop_len, c.n_fft, window, frame_lengths=spec_len)
        return jnp.clip(wav, -c.audio_limit, c.audio_limit)

    # -- entry points ---------------------------------------------------------------------------------------
    def __call__(self, mel: jax.Array, rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Training forward: (waveform [B, T * 480], predicted F0 [B, T])."""
        f0 = self.predict_f0(mel)
        source = self.make_source(f0, rng)
        return self.decode(mel, source), f0

    def inference(
        self,
        mel: jax.Array,
        rng: jax.Array | None = None,
        cache_source: jax.Array | None = None,
        lengths: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """(waveform, source); ``cache_source`` [B, S] replaces the first S source samples (streaming); ``lengths``
        [B] real frames per row of a padded batch (see ``decode``)."""
        f0 = self.predict_f0(mel, lengths)
        source = self.make_source(f0, rng, lengths)
        if cache_source is not None and cache_source.shape[-1]:
            source = source.at[:, : cache_source.shape[-1]].set(cache_source.reshape(source.shape[0], -1))
        return self.decode(mel, source, lengths), source

    def _check_mel(self, mel: jax.Array) -> None:
        if mel.ndim != 3 or mel.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"HiFT: mel must be [B, T, {self.config.in_channels}] (channels last), got {tuple(mel.shape)}"
            )


def _reflect_past_end(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [B, L] with the samples after row b's ``lengths[b]`` replaced by its reflection about its last sample
    (what torch.stft's centred reflect padding puts after a row that ends there)."""
    pos = jnp.arange(x.shape[1])[None, :]
    last = lengths[:, None] - 1
    index = jnp.clip(jnp.where(pos <= last, pos, 2 * last - pos), 0, x.shape[1] - 1)
    return jnp.take_along_axis(x, index, axis=1)
