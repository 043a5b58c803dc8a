"""torch.nn.Conv2d semantics on (batch, height, width, channels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.nn.layers import Axes, param


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(nnx.Module):
    """torch.nn.Conv2d (zero padding) on [B, H, W, C]; kernel stored [kh, kw, in/groups, out].

    torch's (C, H, W) maps to our (H, W, C): a torch input [B, C, H, W] is ``x.transpose(0, 2, 3, 1)`` here.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        axes: Axes = ("conv_in", "conv_out"),
        dtype=None,
        param_dtype=jnp.float32,
        kernel_init=None,
        rngs: nnx.Rngs,
    ):
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.dtype = groups, dtype
        kh, kw = self.kernel_size
        bound = 1.0 / (in_channels // groups * kh * kw) ** 0.5  # torch's default init
        uniform = lambda key, shape, dt: jax.random.uniform(key, shape, dt, -bound, bound)
        self.kernel = param(
            rngs,
            kernel_init or uniform,
            (kh, kw, in_channels // groups, out_channels),
            ("conv_kh", "conv_kw", *axes),
            param_dtype,
        )
        self.bias = param(rngs, uniform, (out_channels,), axes[-1:], param_dtype) if use_bias else None

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """x [B, H, W, in] -> [B, H', W', out]; ``kernel`` overrides the stored one (weight norm passes its own)."""
        kernel = self.kernel[...] if kernel is None else kernel
        dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=self.stride,
            padding=[(p, p) for p in self.padding],
            rhs_dilation=self.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y
