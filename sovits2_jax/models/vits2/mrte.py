"""Multi-reference timbre encoder (``MRTE``): content frames cross-attend to the encoded text, then the style
vector ``ge`` is added: c_post((attn(c_pre(content), text_pre(text)) + c_pre(content) + ge) * mask)."""

from __future__ import annotations

import jax
from flax import nnx

from sovits2_jax.models.vits2.attention import MultiHeadAttention, attention_mask, conv1x1


class MRTE(nnx.Module):
    def __init__(
        self,
        content_channels: int,
        hidden: int = 512,
        out_channels: int | None = None,
        n_heads: int = 4,
        *,
        rngs: nnx.Rngs,
    ):
        out_channels = content_channels if out_channels is None else out_channels
        self.cross_attention = MultiHeadAttention(hidden, hidden, n_heads, rngs=rngs)
        self.c_pre = conv1x1(content_channels, hidden, rngs=rngs)
        self.text_pre = conv1x1(content_channels, hidden, rngs=rngs)
        self.c_post = conv1x1(hidden, out_channels, rngs=rngs)

    def __call__(
        self, content: jax.Array, content_mask: jax.Array, text: jax.Array, text_mask: jax.Array, ge: jax.Array | None
    ) -> jax.Array:
        mask = attention_mask(content_mask, text_mask)
        c = self.c_pre(content * content_mask)
        t = self.text_pre(text * text_mask)
        x = self.cross_attention(c * content_mask, t * text_mask, mask) + c
        if ge is not None:
            x = x + ge
        return self.c_post(x * content_mask)
