"""torch.nn.Conv2d semantics on (batch, height, width, channels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.nn.layers import Axes, TorchConv


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(TorchConv):
    """torch.nn.Conv2d (zero padding) on [B, H, W, C]; kernel stored [kh, kw, in/groups, out].

    torch's (C, H, W) maps to our (H, W, C): a torch input [B, C, H, W] is ``x.transpose(0, 2, 3, 1)`` here.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
        stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
        groups: int = 1, use_bias: bool = True, axes: Axes = ("conv_in", "conv_out"), dtype=None,
        param_dtype=jnp.float32, kernel_init=None, rngs: nnx.Rngs,
    ):  # fmt: skip
        kh, kw = _pair(kernel_size)
        self._init_conv(
            "Conv2d", in_channels, out_channels, groups, (kh, kw, in_channels // groups, out_channels),
            ("conv_kh", "conv_kw", *axes), in_channels // groups * kh * kw,
            use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs,
        )  # fmt: skip
        self.kernel_size, self.stride = (kh, kw), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """x [B, H, W, in] -> [B, H', W', out]; ``kernel`` overrides the stored one (weight norm passes its own)."""
        x, kernel = self._operands(x, kernel)
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=self.stride,
            padding=[(p, p) for p in self.padding],
            rhs_dilation=self.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        return self._add_bias(y)
