"""Token sampling for autoregressive decoding: greedy, temperature, top-k / top-p and CosyVoice2's
repetition-aware sampling (RAS).

Every random choice is an inverse-CDF lookup of an explicit uniform draw, so a fixed key gives fixed tokens
and a plain numpy implementation fed the same uniforms picks the same token.

RAS (CosyVoice2, ``ras_sampling``): draw from the nucleus (descending probabilities, stable order, taken
while the running sum is below ``top_p`` and fewer than ``top_k`` are taken); if that token already occurs
at least ``win_size * tau_r`` times among the last ``win_size`` decoded tokens, draw again from the full
distribution. Tokens a caller forbids at a step (eos before the minimum length, fill tokens) are handled as
the reference does: the whole draw is repeated until an allowed token comes out (``max_trials`` times at
most, then one draw from the distribution with the forbidden tokens removed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sovits2_jax.models.sampling_config import METHODS, SamplingConfig, validate

__all__ = ["METHODS", "SamplingConfig", "sample_tokens", "validate"]

def _cumsum(x: jax.Array) -> jax.Array:
    # On CPU, lax.cumsum is a quadratic reduce_window (costly over a whole vocabulary), while an associative
    # scan over a TopK result defeats XLA's TopK fast path: pick by length.
    if x.shape[-1] > 256:
        return jax.lax.associative_scan(jnp.add, x, axis=-1)
    return jnp.cumsum(x, axis=-1)


def categorical(weights: jax.Array, u: jax.Array) -> jax.Array:
    """Index i with cdf[i-1] <= u * total < cdf[i]; weights [..., N] >= 0, u [...] in [0, 1)."""
    cdf = _cumsum(weights.astype(jnp.float32))
    target = u[..., None] * cdf[..., -1:]
    idx = jnp.sum(cdf <= target, axis=-1)
    # never land on a trailing zero-weight entry (u * total rounding up to total)
    n = weights.shape[-1]
    last = n - 1 - jnp.argmax(jnp.flip(weights > 0, axis=-1), axis=-1)
    return jnp.minimum(idx, last).astype(jnp.int32)


def _sorted_candidates(probs: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array]:
    """Descending probabilities (ties in index order) and their token ids, top_k of them if top_k > 0."""
    vocab = probs.shape[-1]
    if 0 < top_k < vocab:
        return jax.lax.top_k(probs, top_k)  # XLA TopK puts the lower index first among equals
    order = jnp.argsort(-probs, axis=-1, stable=True)
    return jnp.take_along_axis(probs, order, axis=-1), order.astype(jnp.int32)


def _nucleus_pick(values: jax.Array, ids: jax.Array, u: jax.Array, top_p: float) -> jax.Array:
    before = _cumsum(values) - values  # running sum before adding each candidate
    keep = (before < top_p) | (jnp.arange(values.shape[-1]) == 0)
    pick = categorical(jnp.where(keep, values, 0.0), u)
    # a one-hot select, not a gather: gathering from TopK's indices makes XLA:CPU drop its fast TopK path
    chosen = jnp.arange(ids.shape[-1]) == pick[..., None]
    return jnp.sum(jnp.where(chosen, ids, 0), axis=-1).astype(jnp.int32)


def nucleus_sample(probs: jax.Array, u: jax.Array, *, top_p: float, top_k: int) -> jax.Array:
    """CosyVoice2 ``nucleus_sampling`` of probs [B, V] with uniforms u [B] -> token ids [B]."""
    values, ids = _sorted_candidates(probs, top_k)
    return _nucleus_pick(values, ids, u, top_p)


def repetitions(tokens: jax.Array, recent: jax.Array, recent_valid: jax.Array) -> jax.Array:
    """How often each row's token [B] occurs among its valid recent tokens [B, W]."""
    return jnp.sum((recent == tokens[:, None]) & recent_valid, axis=-1)


def _ras_pick(probs, candidates, u_nucleus, u_full, recent, recent_valid, *, top_p, win_size, tau_r):
    tokens = _nucleus_pick(*candidates, u_nucleus, top_p)
    window_valid = recent_valid & (jnp.arange(recent.shape[-1]) >= recent.shape[-1] - win_size)
    repeated = repetitions(tokens, recent, window_valid) >= win_size * tau_r
    return jnp.where(repeated, categorical(probs, u_full), tokens)


def ras_sample(
    probs: jax.Array,
    u_nucleus: jax.Array,
    u_full: jax.Array,
    recent: jax.Array,
    recent_valid: jax.Array,
    *,
    top_p: float,
    top_k: int,
    win_size: int,
    tau_r: float,
) -> jax.Array:
    """CosyVoice2 ``ras_sampling``: a nucleus draw, replaced by a full-distribution draw if it repeats.

    recent [B, W] holds the last decoded tokens (W >= win_size; only the last ``win_size`` valid ones count).
    """
    candidates = _sorted_candidates(probs, top_k)
    return _ras_pick(
        probs, candidates, u_nucleus, u_full, recent, recent_valid, top_p=top_p, win_size=win_size, tau_r=tau_r
    )


def trial_key(key: jax.Array, trial: int | jax.Array) -> jax.Array:
    """The key of draw ``trial`` (0 = the first, then one per retry) of one row's step key."""
    return jax.random.fold_in(key, trial)


def draw_uniforms(key: jax.Array) -> jax.Array:
    """The two uniforms one draw takes from its key: [0] picks the token ("ras" / "nucleus": within the nucleus,
    "random": from the whole distribution), [1] is RAS's full-distribution redraw when the pick repeats."""
    return jax.random.uniform(key, (2,))


def _draw(probs, candidates, keys, recent, recent_valid, config: SamplingConfig) -> jax.Array:
    u = jax.vmap(draw_uniforms)(keys).T  # per-row keys: rows stay independent
    if config.method == "random":
        return categorical(probs, u[0])
    if config.method == "nucleus":
        return _nucleus_pick(*candidates, u[0], config.top_p)
    return _ras_pick(
        probs,
        candidates,
        u[0],
        u[1],
        recent,
        recent_valid,
        top_p=config.top_p,
        win_size=config.win_size,
        tau_r=config.tau_r,
    )


def sample_tokens(
    logits: jax.Array,
    key: jax.Array,
    config: SamplingConfig,
    *,
    recent: jax.Array | None = None,
    recent_valid: jax.Array | None = None,
    forbidden: jax.Array | None = None,
) -> jax.Array:
    """Next tokens [B] from logits [B, V]; ``forbidden`` [B, V] (or [V]) marks tokens that must not come out.

    ``key`` is one key (split per row) or [B] per-row keys (a row's token then depends on its key only).
    Draws are repeated (trial t uses ``fold_in(key, t)``) until every row has an allowed token, as the
    reference's ``sampling_ids`` does for eos; after ``max_trials`` a row falls back to one draw with the
    forbidden tokens removed.
    """
    b, v = logits.shape
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError("sample_tokens: pass typed keys from jax.random.key, not raw uint32 PRNGKey arrays")
    keys = jax.random.split(key, b) if key.ndim == 0 else key
    if keys.shape != (b,):
        raise ValueError(f"sample_tokens: expected one key or {b} keys, got shape {keys.shape}")
    if recent is None:
        recent = jnp.zeros((b, 1), jnp.int32)
        recent_valid = jnp.zeros((b, 1), bool)
    if forbidden is None:
        forbidden = jnp.zeros((b, v), bool)
    forbidden = jnp.broadcast_to(forbidden, (b, v))
    logits = logits.astype(jnp.float32)
    if config.method == "greedy":
        return jnp.argmax(jnp.where(forbidden, -jnp.inf, logits), axis=-1).astype(jnp.int32)
    probs = jax.nn.softmax(logits / config.temperature, axis=-1)
    # sorted once, outside the retry loop (a loop-invariant TopK inside a while_loop is slow on XLA:CPU)
    candidates = None if config.method == "random" else _sorted_candidates(probs, config.top_k)

    def allowed(tokens):
        return ~jnp.take_along_axis(forbidden, tokens[:, None], axis=-1)[:, 0]

    def trial_keys(t):
        return jax.vmap(lambda k: trial_key(k, t))(keys)

    def body(state):
        t, tokens, done = state
        new = _draw(probs, candidates, trial_keys(t), recent, recent_valid, config)
        tokens = jnp.where(done, tokens, new)
        return t + 1, tokens, done | allowed(tokens)

    first = _draw(probs, candidates, trial_keys(0), recent, recent_valid, config)
    state = (jnp.int32(1), first, allowed(first))
    _, tokens, done = jax.lax.while_loop(lambda s: (s[0] <= config.max_trials) & ~jnp.all(s[2]), body, state)
    u_last = jax.vmap(lambda k: jax.random.uniform(k, ()))(trial_keys(config.max_trials + 1))
    fallback = categorical(jnp.where(forbidden, 0.0, probs), u_last)
    return jnp.where(done, tokens, fallback)
