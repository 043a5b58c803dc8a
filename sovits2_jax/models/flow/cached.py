"""Streaming estimator with a cache: each chunk computes only its new frames, exactly as a full streaming pass.

In streaming mode (chunk attention masks, causal convs) a frame never depends on later frames, so for a new block
of frames the estimator needs from the past only (a) the keys/values of every attention layer and (b) the last
kernel-1 inputs of every causal conv, at every Euler step and for both CFG branches. Those are kept in a fixed-size
cache (``max_frames`` positions, static shapes); the new frames' K/V are written once per chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sovits2_jax.models.flow import cfm
from sovits2_jax.models.flow.common import mish
from sovits2_jax.models.flow.estimator import (
    CausalBlock,
    CausalConditionalDecoder,
    CausalConv,
    Stage,
    TransformerBlock,
    timestep_embedding,
)
from sovits2_jax.nn.attention import dot_product_attention


class _State:
    """Walks the cache lists in call order, collecting the updated entries."""

    def __init__(self, cache, batch, max_frames, dtype):
        self.cache, self.i_conv, self.i_kv = cache, 0, 0
        self.batch, self.max_frames, self.dtype = batch, max_frames, dtype
        self.convs, self.kvs = [], []

    def conv_tail(self, width, channels):
        if self.cache is None:
            return jnp.zeros((self.batch, width, channels), self.dtype)
        tail = self.cache["conv"][self.i_conv]
        self.i_conv += 1
        return tail

    def kv(self, heads, head_dim):
        if self.cache is None:
            z = jnp.zeros((self.batch, self.max_frames, heads, head_dim), self.dtype)
            return z, z
        kv = self.cache["kv"][self.i_kv]
        self.i_kv += 1
        return kv

    def result(self):
        return {"conv": self.convs, "kv": self.kvs}


def _conv(cc: CausalConv, x, state: _State, n_valid):
    conv = cc.conv
    k = conv.kernel_size
    tail = state.conv_tail(k - 1, x.shape[-1])
    full = jnp.concatenate([tail, x], axis=1)
    y = jax.lax.conv_general_dilated(
        full, conv.kernel[...].astype(x.dtype), (1,), [(0, 0)], dimension_numbers=("NWC", "WIO", "NWC")
    )
    y = y + conv.bias[...].astype(y.dtype)
    state.convs.append(jax.lax.dynamic_slice_in_dim(full, n_valid, k - 1, axis=1))
    return y


def _block(block: CausalBlock, x, m, state, n_valid):
    return mish(block.norm(_conv(block.conv, x * m, state, n_valid))) * m


def _attention(tb: TransformerBlock, x, state: _State, offset, n_valid, chunk_size):
    """Self-attention of the new frames over cached frames [0, offset) and themselves; the cache is only read here
    (the new K/V are returned and written once per chunk, not once per Euler step)."""
    b, t, _ = x.shape
    h = tb.norm1(x)
    split = lambda y: y.reshape(b, t, tb.heads, tb.head_dim)
    q, k, v = split(tb.query(h)), split(tb.key(h)), split(tb.value(h))
    k_cache, v_cache = state.kv(tb.heads, tb.head_dim)
    state.kvs.append((k, v))
    keys = jnp.concatenate([k_cache.astype(q.dtype), k], axis=1)
    values = jnp.concatenate([v_cache.astype(q.dtype), v], axis=1)
    q_pos = offset + jnp.arange(t)[:, None]
    cached_pos = jnp.arange(k_cache.shape[1])[None, :]
    new_pos = offset + jnp.arange(t)[None, :]
    visible = lambda pos: pos < (q_pos // chunk_size + 1) * chunk_size
    mask = jnp.concatenate(
        [(cached_pos < offset) & visible(cached_pos), (new_pos < offset + n_valid) & visible(new_pos)], axis=1
    )
    y = dot_product_attention(q, keys, values, mask=mask[None, None])
    x = x + tb.out(y.reshape(b, t, -1))
    return x + tb.ff_out(jax.nn.gelu(tb.ff_in(tb.norm3(x)), approximate=False))


def _stage(stage: Stage, x, m, temb, state, offset, n_valid, chunk_size):
    rb = stage.resnet
    hidden = _block(rb.block1, x, m, state, n_valid) + rb.time_proj(mish(temb))[:, None, :]
    hidden = _block(rb.block2, hidden, m, state, n_valid)
    x = hidden + rb.res_conv(x * m)
    for tb in stage.transformers:
        x = _attention(tb, x, state, offset, n_valid, chunk_size)
    return x


def estimator_step(est: CausalConditionalDecoder, x, mu, t, spks, cond, cache, offset, n_valid, max_frames):
    """Velocity for new frames [offset, offset + T) (the first ``n_valid`` real) given the cache of all earlier
    frames; returns (velocity [B, T, M], new cache). ``cache=None`` starts empty."""
    cfg = est.cfg
    b, t_new, _ = x.shape
    state = _State(cache, b, max_frames, x.dtype)
    m = (jnp.arange(t_new) < n_valid)[None, :, None].astype(x.dtype)
    temb = est.time_out(jax.nn.silu(est.time_in(timestep_embedding(t, cfg.in_channels).astype(x.dtype))))
    spks = jnp.broadcast_to(spks[:, None, :], (b, t_new, spks.shape[-1])).astype(x.dtype)
    h = jnp.concatenate([x, mu, spks, cond], axis=-1)
    args = (state, offset, n_valid, cfg.static_chunk_size)
    h = _stage(est.down, h, m, temb, *args)
    skip = h
    h = _conv(est.down_conv, h * m, state, n_valid)
    for stage in est.mid:
        h = _stage(stage, h, m, temb, *args)
    h = _stage(est.up, jnp.concatenate([h, skip], axis=-1), m, temb, *args)
    h = _conv(est.up_conv, h * m, state, n_valid)
    h = _block(est.final_block, h, m, state, n_valid)
    return est.final_proj(h * m) * m, state.result()


def empty_cache(est: CausalConditionalDecoder, batch: int, frames: int, max_frames: int, n_steps: int, dtype):
    """Zero caches for ``n_steps`` Euler steps of a 2*batch (CFG) estimator, stacked on a leading axis:
    {"conv": [tail [n, 2B, k-1, C]], "kv": [(K, V) [n, 2B, max_frames, H, D]]}."""
    m, c = est.cfg.out_channels, est.cfg.in_channels // 4
    b2 = 2 * batch
    shapes = jax.eval_shape(
        lambda: estimator_step(
            est, jnp.zeros((b2, frames, m), dtype), jnp.zeros((b2, frames, m), dtype), jnp.zeros((b2,)),
            jnp.zeros((b2, c), dtype), jnp.zeros((b2, frames, m), dtype), None, 0, frames, max_frames,
        )[1]
    )  # fmt: skip
    conv = [jnp.zeros((n_steps, *s.shape), s.dtype) for s in shapes["conv"]]
    kv = [tuple(jnp.zeros((n_steps, b2, max_frames, *s.shape[2:]), s.dtype) for s in pair) for pair in shapes["kv"]]
    return {"conv": conv, "kv": kv}


def sample_chunk(est, noise, mu, spks, cond, cache, offset, n_valid, cfg, max_frames):
    """Euler + CFG over the new frames only (as ``cfm.sample`` in streaming mode); returns (mel, updated cache)."""
    del max_frames  # implied by the cache
    ts, dts = cfm.time_schedule(cfg.n_timesteps, cfg.t_scheduler)
    rate = cfg.inference_cfg_rate
    b = noise.shape[0]
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=0)
    spks2 = jnp.concatenate([spks, jnp.zeros_like(spks)], axis=0)
    cond2 = jnp.concatenate([cond, jnp.zeros_like(cond)], axis=0)

    def step(x, inputs):
        t, dt, step_cache = inputs
        v, new = estimator_step(
            est, jnp.concatenate([x, x], axis=0), mu2, jnp.full((2 * b,), t, x.dtype), spks2, cond2, step_cache,
            offset, n_valid, None,
        )  # fmt: skip
        v = (1.0 + rate) * v[:b] - rate * v[b:]
        return x + dt.astype(x.dtype) * v, new

    x, new = jax.lax.scan(step, noise.astype(mu.dtype), (jnp.asarray(ts), jnp.asarray(dts), cache))
    # write each layer's new K/V (all steps at once) at offset; frames past n_valid are overwritten next chunk
    kv = [
        tuple(jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), offset, axis=2) for c, n in zip(cp, np_))
        for cp, np_ in zip(cache["kv"], new["kv"])
    ]
    return x.astype(jnp.float32), {"conv": new["conv"], "kv": kv}
