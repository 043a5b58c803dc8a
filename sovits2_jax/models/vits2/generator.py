"""HiFi-GAN generator (GPT-SoVITS ``Generator``): conv_pre + speaker bias, weight-normed transposed-conv
upsampling, multi-receptive-field residual blocks, conv_post, tanh. Layout (batch, time, channels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.vits2.attention import conv1x1
from sovits2_jax.nn.conv_transpose import ConvTranspose1d
from sovits2_jax.nn.layers import Conv1d
from sovits2_jax.nn.weight_norm import weight_norm

LRELU_SLOPE = 0.1
init_normal = nnx.initializers.normal(0.01)  # HiFi-GAN's init_weights


def _padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


def _wn_conv(ch: int, k: int, d: int, rngs) -> nnx.Module:
    return weight_norm(Conv1d(ch, ch, k, dilation=d, padding=_padding(k, d), kernel_init=init_normal, rngs=rngs))


class ResBlock1(nnx.Module):
    """Three (lrelu, dilated conv, lrelu, conv) residual units."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...], *, rngs: nnx.Rngs):
        self.convs1 = nnx.List([_wn_conv(channels, kernel_size, d, rngs) for d in dilation])
        self.convs2 = nnx.List([_wn_conv(channels, kernel_size, 1, rngs) for _ in dilation])

    def __call__(self, x: jax.Array) -> jax.Array:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(jax.nn.leaky_relu(x, LRELU_SLOPE))
            xt = c2(jax.nn.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nnx.Module):
    """(lrelu, dilated conv) residual units."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...], *, rngs: nnx.Rngs):
        self.convs = nnx.List([_wn_conv(channels, kernel_size, d, rngs) for d in dilation])

    def __call__(self, x: jax.Array) -> jax.Array:
        for c in self.convs:
            x = x + c(jax.nn.leaky_relu(x, LRELU_SLOPE))
        return x


class Generator(nnx.Module):
    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes,
        resblock_dilation_sizes,
        upsample_rates,
        upsample_initial_channel: int,
        upsample_kernel_sizes,
        *,
        gin_channels: int = 0,
        rngs: nnx.Rngs,
    ):
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = Conv1d(initial_channel, upsample_initial_channel, 7, padding=3, rngs=rngs)
        block = ResBlock1 if resblock == "1" else ResBlock2
        ups, blocks = [], []
        ch = upsample_initial_channel
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            cin, ch = upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1)
            ups.append(
                weight_norm(
                    ConvTranspose1d(cin, ch, k, stride=u, padding=(k - u) // 2, kernel_init=init_normal, rngs=rngs)
                )
            )
            blocks.extend(
                block(ch, kk, tuple(d), rngs=rngs) for kk, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
            )
        self.ups = nnx.List(ups)
        self.resblocks = nnx.List(blocks)
        self.conv_post = Conv1d(ch, 1, 7, padding=3, use_bias=False, rngs=rngs)
        self.cond = conv1x1(gin_channels, upsample_initial_channel, rngs=rngs) if gin_channels else None

    def __call__(self, z: jax.Array, g: jax.Array | None = None) -> jax.Array:
        """z [B, T, C] (+ g [B, 1, gin]) -> waveform [B, T * prod(upsample_rates), 1] in (-1, 1)."""
        x = self.conv_pre(z)
        if g is not None:
            x = x + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(jax.nn.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(jax.nn.leaky_relu(x, 0.01))  # torch's default slope here, not LRELU_SLOPE
        return jnp.tanh(x)
