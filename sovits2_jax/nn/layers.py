"""Basic parameterised layers whose parameters carry logical axis names.

Every parameter is an ``nnx.Param`` with ``logical_axes`` metadata (one name per dimension); the config's rules
table maps those names to mesh axes (see ``sovits2_jax.parallel.sharding``). Layouts are (batch, time, channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]

default_kernel_init = nnx.initializers.lecun_normal()


def param(rngs: nnx.Rngs | None, init, shape: Sequence[int], axes: Axes, dtype=jnp.float32) -> nnx.Param:
    """Creates an ``nnx.Param`` from ``init(key, shape, dtype)`` tagged with logical axis names."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match parameter shape {tuple(shape)}")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return nnx.Param(init(key, tuple(shape), dtype), logical_axes=tuple(axes))


def _compute(x: jax.Array, w: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    if dtype is None:
        dtype = jnp.result_type(x.dtype, w.dtype)
    return x.astype(dtype), w.astype(dtype)


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel [in, out] (torch's Linear weight transposed)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        axes: Axes = ("embed", "mlp"),
        dtype=None,
        param_dtype=jnp.float32,
        kernel_init=default_kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        rngs: nnx.Rngs,
    ):
        self.in_features, self.out_features, self.dtype = in_features, out_features, dtype
        self.kernel = param(rngs, kernel_init, (in_features, out_features), axes, param_dtype)
        self.bias = param(rngs, bias_init, (out_features,), axes[-1:], param_dtype) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel = _compute(x, self.kernel[...], self.dtype)
        y = jnp.einsum("...i,io->...o", x, kernel)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class Embed(nnx.Module):
    """Lookup table [num_embeddings, features]; ``attend`` gives tied-output logits."""

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        axes: Axes = ("vocab", "embed"),
        dtype=None,
        param_dtype=jnp.float32,
        embedding_init=nnx.initializers.normal(0.02),
        rngs: nnx.Rngs,
    ):
        self.num_embeddings, self.features, self.dtype = num_embeddings, features, dtype
        self.embedding = param(rngs, embedding_init, (num_embeddings, features), axes, param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        table = self.embedding[...]
        if self.dtype is not None:
            table = table.astype(self.dtype)
        return jnp.take(table, ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        x, table = _compute(x, self.embedding[...], self.dtype)
        return jnp.einsum("...d,vd->...v", x, table)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, with the statistics in float32 (as HF Qwen2RMSNorm)."""

    def __init__(
        self, dim: int, *, eps: float = 1e-6, axes: Axes = ("norm",), param_dtype=jnp.float32, rngs=None
    ):
        self.eps = eps
        self.scale = param(rngs, nnx.initializers.ones_init(), (dim,), axes, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(dtype) * xf.astype(dtype)


class LayerNorm(nnx.Module):
    """torch.nn.LayerNorm over the last axis (biased variance, statistics in float32)."""

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-5,
        use_bias: bool = True,
        use_scale: bool = True,
        axes: Axes = ("norm",),
        param_dtype=jnp.float32,
        rngs=None,
    ):
        self.eps = eps
        self.scale = (
            param(rngs, nnx.initializers.ones_init(), (dim,), axes, param_dtype) if use_scale else None
        )
        self.bias = (
            param(rngs, nnx.initializers.zeros_init(), (dim,), axes, param_dtype) if use_bias else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        if self.scale is not None:
            y = y * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(dtype)


def _pad_time(x: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    if left == 0 and right == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[-2] = (left, right)
    if mode == "zeros":
        return jnp.pad(x, widths)
    if mode == "reflect":
        return jnp.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return jnp.pad(x, widths, mode="edge")
    raise ValueError(f"unknown padding_mode {mode!r} (expected zeros, reflect or replicate)")


class TorchConv(nnx.Module):
    """Shared by Conv1d, Conv2d and ConvTranspose1d: torch's default init, operand casting and the bias add."""

    def _init_conv(
        self, name: str, in_channels: int, out_channels: int, groups: int, kernel_shape: Sequence[int],
        kernel_axes: Axes, fan_in: int, *, use_bias: bool, dtype, param_dtype, kernel_init, rngs: nnx.Rngs,
    ) -> None:  # fmt: skip
        """Creates ``kernel`` (``kernel_init`` or torch's default) and ``bias`` [out] on the last kernel axis.

        torch initialises both from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); ``fan_in`` is that of torch's weight.
        """
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels, self.groups, self.dtype = in_channels, out_channels, groups, dtype
        bound = 1.0 / fan_in**0.5
        uniform = lambda key, shape, dt: jax.random.uniform(key, shape, dt, -bound, bound)
        self.kernel = param(rngs, kernel_init or uniform, kernel_shape, kernel_axes, param_dtype)
        self.bias = param(rngs, uniform, (out_channels,), kernel_axes[-1:], param_dtype) if use_bias else None

    def _operands(self, x: jax.Array, kernel: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """x and the kernel (the stored one unless given: weight norm passes its own) in the compute dtype."""
        return _compute(x, self.kernel[...] if kernel is None else kernel, self.dtype)

    def _add_bias(self, y: jax.Array) -> jax.Array:
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class Conv1d(TorchConv):
    """torch.nn.Conv1d semantics on (batch, time, channels); kernel stored [k, in/groups, out]."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
        padding: int | tuple[int, int] = 0, dilation: int = 1, padding_mode: str = "zeros", groups: int = 1,
        use_bias: bool = True, axes: Axes = ("conv_in", "conv_out"), dtype=None, param_dtype=jnp.float32,
        kernel_init=None, rngs: nnx.Rngs,
    ):  # fmt: skip
        self._init_conv(
            "Conv1d", in_channels, out_channels, groups, (kernel_size, in_channels // groups, out_channels),
            ("conv_k", *axes), in_channels // groups * kernel_size,
            use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs,
        )  # fmt: skip
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.padding_mode = padding_mode

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """Convolves x [B, T, C_in]; ``kernel`` overrides the stored one (weight norm passes its folded kernel)."""
        x, kernel = self._operands(x, kernel)
        x = _pad_time(x, *self.padding, self.padding_mode)
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride,),
            padding=[(0, 0)],
            rhs_dilation=(self.dilation,),
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
        )
        return self._add_bias(y)


def zero_after(x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """x [B, T, ...] with every frame at or after row b's ``lengths[b]`` set to zero (identity for None).

    A "same"-padded convolution of a row zeroed past its end equals the convolution of the row alone on its real
    frames, which is how the padded batch reproduces per-row results."""
    if lengths is None:
        return x
    keep = jnp.arange(x.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    return x * keep.reshape(*keep.shape, *([1] * (x.ndim - 2))).astype(x.dtype)
