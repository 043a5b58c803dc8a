"""Snake activation (Liu et al. 2020) as BigVGAN / CosyVoice use it, per-channel alpha."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.nn.layers import Axes, param

_EPS = 1e-9  # the reference's guard against alpha == 0


def snake(x: jax.Array, alpha: jax.Array) -> jax.Array:
    """x + sin(alpha x)^2 / alpha, alpha broadcast over the last (channel) axis."""
    alpha = alpha.astype(x.dtype)
    return x + (1.0 / (alpha + _EPS)) * jnp.square(jnp.sin(x * alpha))


class Snake(nnx.Module):
    """Snake over channels-last inputs; ``alpha`` [C] (log-scale when ``alpha_logscale``), torch key ``alpha``."""

    def __init__(
        self,
        channels: int,
        *,
        alpha: float = 1.0,
        alpha_logscale: bool = False,
        axes: Axes = ("channels",),
        param_dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.alpha_logscale = alpha_logscale
        init = 0.0 if alpha_logscale else alpha
        self.alpha = param(rngs, lambda key, shape, dt: jnp.full(shape, init, dt), (channels,), axes, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.alpha[...]
        if self.alpha_logscale:
            alpha = jnp.exp(alpha)
        return snake(x, alpha)
