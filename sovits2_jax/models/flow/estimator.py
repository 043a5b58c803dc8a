"""CausalConditionalDecoder: the velocity estimator of CosyVoice2's flow matching (a causal 1-D U-Net).

Input channels are concat(x, mu, speaker, cond); a sinusoidal time embedding goes through an MLP and into every
ResNet block. Each level = causal ResNet block + diffusers-style transformer blocks; CosyVoice2 has one level (its
"downsample"/"upsample" are plain causal convs), 12 mid blocks, a skip concatenation, a final causal block and a
1x1 projection. Layout (batch, time, channels); ``mask`` is [B, T] (1 = valid frame).

Every block takes an optional ``cache`` (a ``ChunkCache``) for chunked streaming: the call then computes only new
frames, reading the keys/values of earlier frames and the inputs of earlier frames that the causal convs still see.
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


class ChunkCache:
    """Cache argument of the estimator's blocks: new frames [offset, offset + T) over cached earlier frames.

    In streaming mode (chunk attention mask, causal convs) a frame never depends on later frames, so new frames
    need from the past only each attention layer's K/V and each causal conv's last kernel-1 inputs. ``entries``
    is {"conv": [tail [B, k-1, C]], "kv": [(K, V) [B, max_frames, H, D]]} in call order (``None``: zeros, for
    ``jax.eval_shape`` to size an empty cache; then ``max_frames`` is needed). Blocks read their entry and record
    the new one (conv tails after the ``n_valid`` real frames; the new frames' K/V), collected by ``updates``.
    Attention reads only the first ``visible`` cached positions (static; at least ``offset``, default all): the
    rest are later frames, masked anyway, whose keys would cost as much as the real ones.
    """

    def __init__(self, entries, offset, n_valid, *, max_frames: int | None = None, visible: int | None = None):
        self.entries, self.offset, self.n_valid = entries, offset, n_valid
        self.max_frames = max_frames if entries is None else entries["kv"][0][0].shape[1]
        self.visible = self.max_frames if visible is None else min(visible, self.max_frames)
        self.convs, self.kvs = [], []

    def conv_input(self, x: jax.Array, width: int) -> jax.Array:
        """x [B, T, C] with the cached ``width`` inputs before it; records the tail after the valid frames."""
        if self.entries is None:
            tail = jnp.zeros((x.shape[0], width, x.shape[-1]), x.dtype)
        else:
            tail = self.entries["conv"][len(self.convs)].astype(x.dtype)
        full = jnp.concatenate([tail, x], axis=1)
        self.convs.append(jax.lax.dynamic_slice_in_dim(full, self.n_valid, width, axis=1))
        return full

    def keys_values(self, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        """New K/V [B, T, H, D] after the cached ones [B, max_frames, H, D]; records the new ones."""
        if self.entries is None:
            k_cache = v_cache = jnp.zeros((k.shape[0], self.max_frames, *k.shape[2:]), k.dtype)
        else:
            k_cache, v_cache = self.entries["kv"][len(self.kvs)]
        self.kvs.append((k, v))
        if self.visible == 0:
            return k, v
        joined = lambda cached, new: jnp.concatenate([cached[:, : self.visible].astype(new.dtype), new], axis=1)
        return joined(k_cache, k), joined(v_cache, v)

    def attention_mask(self, valid: jax.Array, chunk_size: int) -> jax.Array:
        """[B, 1, T, visible + T]: cached frames before ``offset`` and valid new frames, under the chunk mask."""
        b, t = valid.shape
        rows = self.offset + jnp.arange(t)[:, None]
        cached_pos = jnp.arange(self.visible)[None, :]
        visible = lambda pos: pos < (rows // chunk_size + 1) * chunk_size
        new = valid[:, None, None, :] & visible(self.offset + jnp.arange(t)[None, :])
        if self.visible == 0:
            return new
        cached = jnp.broadcast_to((cached_pos < self.offset) & visible(cached_pos), (b, 1, t, self.visible))
        return jnp.concatenate([cached, new], axis=-1)

    def updates(self) -> dict:
        """The recorded entries, in the layout of ``entries`` (K/V of the new frames only)."""
        return {"conv": self.convs, "kv": self.kvs}


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

    def __call__(self, x, cache: ChunkCache | None = None):
        if cache is None:
            return self.conv(x)
        width = self.conv.kernel_size - 1
        return self.conv(cache.conv_input(x, width))[:, width:]


class CausalBlock(nnx.Module):
    """mask -> causal conv k3 -> LayerNorm over channels -> Mish -> mask."""

    def __init__(self, dim_in: int, dim_out: int, *, rngs: nnx.Rngs):
        self.conv = CausalConv(dim_in, dim_out, 3, rngs=rngs)
        self.norm = LayerNorm(dim_out, eps=1e-5, rngs=rngs)

    def __call__(self, x, mask, cache: ChunkCache | None = None):
        return mish(self.norm(self.conv(x * mask, cache))) * mask


class CausalResnetBlock(nnx.Module):
    """Two causal blocks with the time embedding (Mish -> Linear) added between them, plus a 1x1 residual conv."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int, *, rngs: nnx.Rngs):
        self.block1 = CausalBlock(dim_in, dim_out, rngs=rngs)
        self.time_proj = Linear(time_dim, dim_out, axes=("time_embed", "conv_out"), rngs=rngs)
        self.block2 = CausalBlock(dim_out, dim_out, rngs=rngs)
        self.res_conv = Conv1d(dim_in, dim_out, 1, axes=CONV_AXES, rngs=rngs)

    def __call__(self, x, mask, temb, cache: ChunkCache | None = None):
        h = self.block1(x, mask, cache) + self.time_proj(mish(temb))[:, None, :]
        h = self.block2(h, mask, cache)
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

    def __call__(self, x, mask, cache: ChunkCache | None = None):
        b, t, _ = x.shape
        h = self.norm1(x)
        split = lambda y: y.reshape(b, t, self.heads, self.head_dim)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        if cache is not None:
            k, v = cache.keys_values(k, v)
        y = dot_product_attention(q, k, v, mask=mask)
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

    def __call__(self, x, mask, attn_mask, temb, cache: ChunkCache | None = None):
        x = self.resnet(x, mask, temb, cache)
        for block in self.transformers:
            x = block(x, attn_mask, cache)
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

    def __call__(self, x, mask, mu, t, spks, cond, *, streaming=False, cache: ChunkCache | None = None):
        """x, mu, cond [B, T, M]; mask [B, T]; t [B]; spks [B, M]; returns the velocity [B, T, M] (zero where masked).

        ``streaming`` (bool or traced scalar) picks the static chunk attention mask over the full one. With
        ``cache`` (streaming only) the T frames follow the cached ones and ``cache`` records their entries.
        """
        cfg = self.cfg
        b, length, _ = x.shape
        temb = self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t, cfg.in_channels).astype(x.dtype))))
        spks = jnp.broadcast_to(spks[:, None, :], (b, length, spks.shape[-1]))
        h = jnp.concatenate([x, mu, spks.astype(x.dtype), cond], axis=-1)
        if h.shape[-1] != cfg.in_channels:
            raise ValueError(f"estimator expects {cfg.in_channels} input channels (x, mu, spks, cond), got {h.shape}")
        valid = mask > 0
        if cache is None:
            attn_mask = attention_mask(valid, cfg.static_chunk_size, streaming)
        elif streaming is not True:
            raise ValueError("the estimator's cache needs streaming=True (chunk attention, causal convs)")
        else:
            attn_mask = cache.attention_mask(valid, cfg.static_chunk_size)
        m = mask[..., None].astype(x.dtype)

        h = self.down(h, m, attn_mask, temb, cache)
        skip = h
        h = self.down_conv(h * m, cache)
        for stage in self.mid:
            h = stage(h, m, attn_mask, temb, cache)
        h = self.up(jnp.concatenate([h, skip], axis=-1), m, attn_mask, temb, cache)
        h = self.up_conv(h * m, cache)
        h = self.final_block(h, m, cache)
        return self.final_proj(h * m) * m
