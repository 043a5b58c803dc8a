"""The cache of ``CachedFlowStreamer``: per Euler step and CFG branch, the estimator's ``ChunkCache`` entries.

In streaming mode a frame never depends on later frames, so each chunk runs the estimator's own forward on its new
frames only, with a ``ChunkCache`` over every earlier frame (attention K/V, causal-conv tails). The cache has a
fixed size (``max_frames`` positions, static shapes); the new frames' K/V are written once per chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sovits2_jax.models.flow import cfm
from sovits2_jax.models.flow.estimator import CausalConditionalDecoder, ChunkCache


def _cached_estimator(est: CausalConditionalDecoder, offset, n_valid, max_frames=None, visible=None):
    """The estimator as ``cfm.sample`` calls it with a per-step state: (velocity, the step's new cache entries)."""

    def run(x, mask, mu, t, spks, cond, *, streaming, step_state):
        cache = ChunkCache(step_state, offset, n_valid, max_frames=max_frames, visible=visible)
        return est(x, mask, mu, t, spks, cond, streaming=streaming, cache=cache), cache.updates()

    return run


def empty_cache(est: CausalConditionalDecoder, batch: int, frames: int, max_frames: int, n_steps: int, dtype):
    """Zero caches for ``n_steps`` Euler steps of a 2*batch (CFG) estimator, stacked on a leading axis:
    {"conv": [tail [n, 2B, k-1, C]], "kv": [(K, V) [n, 2B, max_frames, H, D]]}."""
    m, c = est.cfg.out_channels, est.cfg.in_channels // 4
    b2 = 2 * batch
    x = jnp.zeros((b2, frames, m), dtype)
    run = _cached_estimator(est, 0, frames, max_frames)
    shapes = jax.eval_shape(
        lambda: run(x, jnp.ones((b2, frames), dtype), x, jnp.zeros((b2,)), jnp.zeros((b2, c), dtype), x,
                    streaming=True, step_state=None)[1]
    )  # fmt: skip
    conv = [jnp.zeros((n_steps, *s.shape), s.dtype) for s in shapes["conv"]]
    kv = [tuple(jnp.zeros((n_steps, b2, max_frames, *s.shape[2:]), s.dtype) for s in pair) for pair in shapes["kv"]]
    return {"conv": conv, "kv": kv}


def sample_chunk(est: CausalConditionalDecoder, noise, mu, spks, cond, cache, offset, n_valid, cfg, visible=None):
    """``cfm.sample`` in streaming mode over the new frames [offset, offset + T) (the first ``n_valid`` real)
    given ``cache`` of the earlier ones; returns (mel [B, T, M], updated cache). ``visible`` (static, >= offset):
    how many cached positions attention reads (default all)."""
    mask = jnp.broadcast_to(jnp.arange(noise.shape[1]) < n_valid, noise.shape[:2]).astype(mu.dtype)
    run = _cached_estimator(est, offset, n_valid, visible=visible)
    mel, new = cfm.sample(run, noise, mask, mu, spks, cond, cfg, streaming=True, step_state=cache)
    # write each layer's new K/V (all steps at once) at offset; frames past n_valid are overwritten next chunk
    kv = [
        tuple(jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), offset, axis=2) for c, n in zip(old, fresh))
        for old, fresh in zip(cache["kv"], new["kv"])
    ]
    return mel, {"conv": new["conv"], "kv": kv}
