"""Scaled dot-product attention through ``jax.nn.dot_product_attention`` and the boolean masks we use.

Masks are boolean with True = may attend, broadcastable to [batch, heads, query, key].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = (None, "xla", "cudnn")


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    implementation: str | None = None,
    scale: float | None = None,
) -> jax.Array:
    """Attention over q [B, T, H, D] and k/v [B, S, K, D] (grouped-query when K divides H) -> [B, T, H, D]."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r} not in {IMPLEMENTATIONS}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{k.shape[2]} key/value heads do not divide {q.shape[2]} query heads")
    if mask is not None:
        mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=scale, implementation=implementation
    )


def causal_mask(length: int, kv_length: int | None = None) -> jax.Array:
    """[T, S] lower-triangular mask; with S > T the queries are the last T positions."""
    kv_length = length if kv_length is None else kv_length
    q = jnp.arange(length)[:, None] + (kv_length - length)
    return q >= jnp.arange(kv_length)[None, :]


def segment_mask(segment_ids_q: jax.Array, segment_ids_kv: jax.Array | None = None) -> jax.Array:
    """[B, 1, T, S]: a query attends only keys of its own packed segment; segment id 0 is padding."""
    segment_ids_kv = segment_ids_q if segment_ids_kv is None else segment_ids_kv
    same = segment_ids_q[:, :, None] == segment_ids_kv[:, None, :]
    return (same & (segment_ids_kv[:, None, :] > 0))[:, None]
