"""torch.nn.ConvTranspose1d semantics on (batch, time, channels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.nn.layers import Axes, TorchConv


def conv_transpose1d(
    x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1,
    groups: int = 1,
) -> jax.Array:  # fmt: skip
    """Transposed convolution of x [B, T, I] with kernel [K, I, O/groups] (torch's [I, O/groups, K] transposed).

    Output length is torch's ``(T - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1``.
    """
    k, cin, cout_g = kernel.shape
    if x.shape[-1] != cin:
        raise ValueError(f"conv_transpose1d: input has {x.shape[-1]} channels, kernel expects {cin}")
    if cin % groups:
        raise ValueError(f"conv_transpose1d: groups={groups} must divide in_channels={cin}")
    if output_padding >= max(stride, dilation):
        raise ValueError(f"conv_transpose1d: output_padding={output_padding} must be < max(stride, dilation)")
    # A transposed conv is a stride-1 conv over the input dilated by `stride`, with the kernel flipped and its
    # in/out roles swapped; torch's `padding` removes samples from both ends of the full output.
    edge = dilation * (k - 1)
    w = jnp.flip(kernel, axis=0)
    if groups > 1:
        # [K, g * I/g, O/g] -> [K, I/g, g * O/g]: each group's input block feeds its own output block.
        w = w.reshape(k, groups, cin // groups, cout_g).transpose(0, 2, 1, 3).reshape(k, cin // groups, groups * cout_g)
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,),
        padding=[(edge - padding, edge - padding + output_padding)],
        lhs_dilation=(stride,),
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
    )


class ConvTranspose1d(TorchConv):
    """torch.nn.ConvTranspose1d on (batch, time, channels); kernel stored [k, in, out/groups]."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
        output_padding: int = 0, dilation: int = 1, groups: int = 1, use_bias: bool = True,
        axes: Axes = ("conv_in", "conv_out"), dtype=None, param_dtype=jnp.float32, kernel_init=None, rngs: nnx.Rngs,
    ):  # fmt: skip
        if padding < 0 or output_padding < 0:
            raise ValueError(f"ConvTranspose1d: padding={padding} and output_padding={output_padding} must be >= 0")
        # torch initialises from the fan-in of its [in, out/groups, k] weight, i.e. (out/groups) * k.
        self._init_conv(
            "ConvTranspose1d", in_channels, out_channels, groups, (kernel_size, in_channels, out_channels // groups),
            ("conv_k", *axes), out_channels // groups * kernel_size,
            use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs,
        )  # fmt: skip
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding, self.dilation = output_padding, dilation

    def __call__(self, x: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """x [B, T, in] -> [B, T', out]; ``kernel`` overrides the stored one (weight norm passes its own)."""
        x, kernel = self._operands(x, kernel)
        y = conv_transpose1d(
            x, kernel, stride=self.stride, padding=self.padding, output_padding=self.output_padding,
            dilation=self.dilation, groups=self.groups,
        )  # fmt: skip
        return self._add_bias(y)
