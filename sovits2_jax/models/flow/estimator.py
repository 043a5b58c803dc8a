"""CausalConditionalDecoder: the velocity estimator of CosyVoice2's flow matching (a causal 1-D U-Net).

Input channels are concat(x, mu, speaker, cond); a sinusoidal time embedding goes through an MLP and into every
ResNet block. Each level = causal ResNet block + diffusers-style transformer blocks; CosyVoice2 has one level (its
"downsample"/"upsample" are plain causal convs), 12 mid blocks, a skip concatenation, a final causal block and a
1x1 projection. Layout (batch, time, channels); ``mask`` is [B, T] (1 = valid frame).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.flow.common import CONV_AXES, attention_mask, mish
from sovits2_jax.models.flow.config import EstimatorConfig
from sovits2_jax.nn.attention import dot_product_attention
from sovits2_jax.nn.layers import Conv1d, LayerNorm, Linear
from sovits2_jax.parallel.sharding import constrain


def timestep_embedding(t: jax.Array, dim: int, scale: float = 1000.0) -> jax.Array:
    """[B] -> [B, dim]: (sin, cos) of scale * t * 10000^(-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
    args = scale * t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class CausalConv(nnx.Module):
    """Conv1d with kernel-1 zeros on the left only (output frame i sees input frames <= i)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, *, rngs: nnx.Rngs):
        self.conv = Conv1d(dim_in, dim_out, kernel, padding=(kernel - 1, 0), axes=CONV_AXES, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class CausalBlock(nnx.Module):
    """mask -> causal conv k3 -> LayerNorm over channels -> Mish -> mask."""

    def __init__(self, dim_in: int, dim_out: int, *, rngs: nnx.Rngs):
        self.conv = CausalConv(dim_in, dim_out, 3, rngs=rngs)
        self.norm = LayerNorm(dim_out, eps=1e-5, rngs=rngs)

    def __call__(self, x, mask):
        return mish(self.norm(self.conv(x * mask))) * mask


class CausalResnetBlock(nnx.Module):
    """Two causal blocks with the time embedding (Mish -> Linear) added between them, plus a 1x1 residual conv."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int, *, rngs: nnx.Rngs):
        self.block1 = CausalBlock(dim_in, dim_out, rngs=rngs)
        self.time_proj = Linear(time_dim, dim_out, axes=("time_embed", "conv_out"), rngs=rngs)
        self.block2 = CausalBlock(dim_out, dim_out, rngs=rngs)
        self.res_conv = Conv1d(dim_in, dim_out, 1, axes=CONV_AXES, rngs=rngs)

    def __call__(self, x, mask, temb):
        h = self.block1(x, mask) + self.time_proj(mish(temb))[:, None, :]
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class TransformerBlock(nnx.Module):
    """diffusers BasicTransformerBlock as CosyVoice2 uses it: pre-LN self-attention (no q/k/v bias), pre-LN GELU FF."""

    def __init__(self, dim: int, heads: int, head_dim: int, *, rngs: nnx.Rngs):
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm1 = LayerNorm(dim, eps=1e-5, rngs=rngs)
        self.query = Linear(dim, inner, use_bias=False, axes=("embed", "heads"), rngs=rngs)
        self.key = Linear(dim, inner, use_bias=False, axes=("embed", "heads"), rngs=rngs)
        self.value = Linear(dim, inner, use_bias=False, axes=("embed", "heads"), rngs=rngs)
        self.out = Linear(inner, dim, axes=("heads", "embed"), rngs=rngs)
        self.norm3 = LayerNorm(dim, eps=1e-5, rngs=rngs)
        self.ff_in = Linear(dim, 4 * dim, axes=("embed", "mlp"), rngs=rngs)
        self.ff_out = Linear(4 * dim, dim, axes=("mlp", "embed"), rngs=rngs)

    def __call__(self, x, mask):
        b, t, _ = x.shape
        h = self.norm1(x)
        split = lambda y: y.reshape(b, t, self.heads, self.head_dim)
        y = dot_product_attention(split(self.query(h)), split(self.key(h)), split(self.value(h)), mask=mask)
        x = x + self.out(y.reshape(b, t, -1))
        y = self.ff_out(jax.nn.gelu(self.ff_in(self.norm3(x)), approximate=False))
        return constrain(x + y, ("batch", "length", "act_embed"))


class Stage(nnx.Module):
    """One ResNet block followed by ``n_blocks`` transformer blocks."""

    def __init__(self, dim_in: int, dim_out: int, cfg: EstimatorConfig, time_dim: int, *, rngs: nnx.Rngs):
        self.resnet = CausalResnetBlock(dim_in, dim_out, time_dim, rngs=rngs)
        self.transformers = nnx.List(
            [TransformerBlock(dim_out, cfg.num_heads, cfg.attention_head_dim, rngs=rngs) for _ in range(cfg.n_blocks)]
        )

    def __call__(self, x, mask, attn_mask, temb):
        x = self.resnet(x, mask, temb)
        for block in self.transformers:
            x = block(x, attn_mask)
        return x


class CausalConditionalDecoder(nnx.Module):
    """Velocity field v(x, t | mu, spks, cond) over [B, T, n_mels]."""

    def __init__(self, cfg: EstimatorConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        ch = cfg.channels[0]
        time_dim = 4 * ch
        self.time_in = Linear(cfg.in_channels, time_dim, axes=("embed_in", "time_embed"), rngs=rngs)
        self.time_out = Linear(time_dim, time_dim, axes=("time_embed", "time_embed_out"), rngs=rngs)
        self.down = Stage(cfg.in_channels, ch, cfg, time_dim, rngs=rngs)
        self.down_conv = CausalConv(ch, ch, 3, rngs=rngs)
        self.mid = nnx.List([Stage(ch, ch, cfg, time_dim, rngs=rngs) for _ in range(cfg.num_mid_blocks)])
        self.up = Stage(2 * ch, ch, cfg, time_dim, rngs=rngs)
        self.up_conv = CausalConv(ch, ch, 3, rngs=rngs)
        self.final_block = CausalBlock(ch, ch, rngs=rngs)
        self.final_proj = Conv1d(ch, cfg.out_channels, 1, axes=CONV_AXES, rngs=rngs)

    def __call__(self, x, mask, mu, t, spks, cond, *, streaming=False):
        """x, mu, cond [B, T, M]; mask [B, T]; t [B]; spks [B, M]; returns the velocity [B, T, M] (zero where masked).

        ``streaming`` (bool or traced scalar) picks the static chunk attention mask over the full one.
        """
        cfg = self.cfg
        b, length, _ = x.shape
        temb = self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t, cfg.in_channels).astype(x.dtype))))
        spks = jnp.broadcast_to(spks[:, None, :], (b, length, spks.shape[-1]))
        h = jnp.concatenate([x, mu, spks.astype(x.dtype), cond], axis=-1)
        if h.shape[-1] != cfg.in_channels:
            raise ValueError(f"estimator expects {cfg.in_channels} input channels (x, mu, spks, cond), got {h.shape}")
        valid = mask > 0
        attn_mask = attention_mask(valid, cfg.static_chunk_size, streaming)
        m = mask[..., None].astype(x.dtype)

        h = self.down(h, m, attn_mask, temb)
        skip = h
        h = self.down_conv(h * m)
        for stage in self.mid:
            h = stage(h, m, attn_mask, temb)
        h = self.up(jnp.concatenate([h, skip], axis=-1), m, attn_mask, temb)
        h = self.up_conv(h * m)
        h = self.final_block(h, m)
        return self.final_proj(h * m) * m
