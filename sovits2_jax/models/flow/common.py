"""Small pieces shared by the flow encoder and estimator: dropout with explicit keys, mask helpers, activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Conv kernels [k, in, out] are split over "tensor" on their output channels only. With in/out split over fsdp
# and tensor together, XLA's CPU SPMD partitioner (jax 0.10.2) returns a wrong kernel gradient for the first of two
# chained k>1 convolutions on a data x fsdp x tensor mesh (4% off; either axis alone is exact): keep in replicated.
CONV_AXES = ("conv_in_replicated", "conv_out")


class Dropout:
    """Draws independent dropout masks from one key (``None`` key or rate 0 = identity).

    A fresh instance per forward pass; each call folds a running counter into the key, so the order of calls
    (fixed by the code) decides the masks and the forward stays a pure function of (params, inputs, key).
    """

    def __init__(self, key: jax.Array | None):
        self.key = key
        self.count = 0

    def __call__(self, x: jax.Array, rate: float) -> jax.Array:
        if self.key is None or rate <= 0.0:
            return x
        self.count += 1
        keep = jax.random.bernoulli(jax.random.fold_in(self.key, self.count), 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


def attention_mask(valid: jax.Array, chunk_size: int, streaming) -> jax.Array:
    """[B, 1, T, T] boolean mask: padding on keys, plus the static chunk mask when ``streaming``.

    ``streaming`` may be a Python bool or a traced scalar (training draws it per batch).
    """
    length = valid.shape[1]
    keys = valid[:, None, None, :]
    rows = jnp.arange(length)[:, None]
    chunk = jnp.arange(length)[None, :] < (rows // chunk_size + 1) * chunk_size
    if isinstance(streaming, bool):
        return keys & chunk if streaming else jnp.broadcast_to(keys, (valid.shape[0], 1, length, length))
    return keys & (chunk | ~jnp.asarray(streaming, bool))
