"""Mean-only affine coupling flow between the prior and the posterior latent (VITS ``ResidualCouplingBlock``),
with WaveNet couplings (GPT-SoVITS) or transformer couplings (VITS2 / GPT-SoVITS2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.vits2.attention import Encoder, conv1x1, split_key
from sovits2_jax.models.vits2.wavenet import WaveNet
from sovits2_jax.nn.layers import Conv1d

zeros = nnx.initializers.zeros_init()


class CouplingLayer(nnx.Module):
    """x = [x0, x1]; x1 <- x1 + m(x0, g) (forward) or x1 - m(x0, g) (reverse); log-det 0 (mean only)."""

    def __init__(self, channels: int, hidden_channels: int, enc: nnx.Module, *, rngs: nnx.Rngs):
        self.half = channels // 2
        self.pre = conv1x1(self.half, hidden_channels, rngs=rngs)
        self.enc = enc
        # zero-initialised so every flow starts as the identity
        self.post = Conv1d(hidden_channels, self.half, 1, kernel_init=zeros, rngs=rngs)
        self.post.bias[...] = jnp.zeros_like(self.post.bias[...])

    def __call__(
        self, x: jax.Array, mask: jax.Array, g: jax.Array | None, reverse: bool, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        x0, x1 = x[..., : self.half], x[..., self.half :]
        h = self.pre(x0) * mask
        h = self.enc(h, mask, g) if dropout_key is None else self.enc(h, mask, g, dropout_key=dropout_key)
        m = self.post(h) * mask
        x1 = (x1 - m) * mask if reverse else m + x1 * mask
        return jnp.concatenate([x0, x1], axis=-1)


class CouplingBlock(nnx.Module):
    """``n_flows`` x (coupling, channel flip)."""

    def __init__(self, layers: list[CouplingLayer]):
        self.flows = nnx.List(layers)

    def __call__(
        self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None, *, reverse: bool = False, dropout_key=None
    ):
        """``dropout_key`` (training) reaches transformer couplings; WaveNet couplings have no dropout."""
        keys = split_key(dropout_key, len(self.flows))
        order = reversed(list(zip(self.flows, keys))) if reverse else zip(self.flows, keys)
        for flow, key in order:
            key = key if isinstance(flow.enc, Encoder) else None
            if reverse:
                x = flow(jnp.flip(x, axis=-1), mask, g, True, key)
            else:
                x = jnp.flip(flow(x, mask, g, False, key), axis=-1)
        return x


def wavenet_flow(
    channels, hidden_channels, kernel_size, dilation_rate, n_layers, n_flows, gin_channels, *, rngs
) -> CouplingBlock:
    return CouplingBlock(
        [
            CouplingLayer(
                channels,
                hidden_channels,
                WaveNet(
                    hidden_channels,
                    kernel_size,
                    dilation_rate,
                    n_layers,
                    gin_channels=gin_channels,
                    rngs=rngs,
                ),
                rngs=rngs,
            )
            for _ in range(n_flows)
        ]
    )


def transformer_flow(
    channels,
    hidden_channels,
    filter_channels,
    n_heads,
    n_layers,
    kernel_size,
    n_flows,
    gin_channels,
    *,
    window_size=4,
    rope_theta=None,
    p_dropout=0.0,
    rngs,
) -> CouplingBlock:
    """Transformer couplings; every one of the ``n_layers`` encoder layers is built and applied."""
    return CouplingBlock(
        [
            CouplingLayer(
                channels,
                hidden_channels,
                Encoder(
                    hidden_channels, filter_channels, n_heads, n_layers, kernel_size, window_size=window_size,
                    rope_theta=rope_theta, gin_channels=gin_channels, p_dropout=p_dropout, rngs=rngs,
                ),
                rngs=rngs,
            )
            for _ in range(n_flows)
        ]
    )
