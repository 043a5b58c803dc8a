"""Sampling: nucleus / RAS against a plain numpy version of CosyVoice2's algorithm fed the same uniforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sovits2_jax.infer import sampling

# one compiled function per config instead of eager while_loops
sample_tokens = jax.jit(sampling.sample_tokens, static_argnums=(2,))


def np_categorical(weights, u):
    cdf = np.cumsum(np.asarray(weights, np.float32))
    return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(weights) - 1)


def np_nucleus(probs, u, top_p, top_k):
    """Line-by-line the reference loop: stable descending sort, take while cum < top_p and count < top_k."""
    order = np.argsort(-probs, kind="stable")
    vals, ids, cum = [], [], np.float32(0.0)
    for i in order:
        if cum < top_p and len(vals) < top_k:
            cum += probs[i]
            vals.append(probs[i])
            ids.append(int(i))
        else:
            break
    return ids[np_categorical(vals, u)]


def np_ras(probs, u1, u2, decoded, top_p=0.8, top_k=25, win_size=10, tau_r=0.1):
    top = np_nucleus(probs, u1, top_p, top_k)
    rep = sum(1 for t in decoded[-win_size:] if t == top)
    if rep >= win_size * tau_r:
        top = np_categorical(probs, u2)
    return top


def _probs(rng, b, v, scale):
    logits = rng.normal(size=(b, v)).astype(np.float32) * scale
    return np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))


@pytest.mark.parametrize("top_p,top_k", [(0.8, 25), (0.5, 3), (0.95, 0), (1.0, 7)])
def test_nucleus_matches_numpy(top_p, top_k):
    rng = np.random.default_rng(0)
    probs = _probs(rng, 96, 200, scale=np.linspace(0.5, 6.0, 96)[:, None])
    u = rng.uniform(size=96).astype(np.float32)
    ours = np.asarray(sampling.nucleus_sample(jnp.asarray(probs), jnp.asarray(u), top_p=top_p, top_k=top_k))
    ref = [np_nucleus(probs[i], u[i], top_p, top_k if top_k > 0 else 10**9) for i in range(96)]
    np.testing.assert_array_equal(ours, ref)


def test_nucleus_ties_keep_index_order():
    probs = np.full((1, 10), 0.1, np.float32)
    # 0.8 of the mass = the first 8 equal entries in index order; u just below 1 picks the 8th (id 7)
    got = sampling.nucleus_sample(jnp.asarray(probs), jnp.asarray([0.999]), top_p=0.75, top_k=25)
    assert int(got[0]) == np_nucleus(probs[0], 0.999, 0.75, 25) == 7


def test_ras_matches_numpy_both_branches():
    rng = np.random.default_rng(1)
    b, v, w = 64, 50, 12
    probs = _probs(rng, b, v, scale=3.0)
    # histories made of each row's most likely tokens so that repetitions really happen
    top = np.argsort(-probs, axis=-1)[:, :4]
    hist_len = rng.integers(0, w + 1, size=b)
    recent = np.take_along_axis(top, rng.integers(0, 4, size=(b, w)), axis=-1).astype(np.int32)
    valid = np.arange(w)[None, :] >= (w - hist_len)[:, None]
    u1, u2 = rng.uniform(size=(2, b)).astype(np.float32)
    ours = np.asarray(
        sampling.ras_sample(
            jnp.asarray(probs),
            jnp.asarray(u1),
            jnp.asarray(u2),
            jnp.asarray(recent),
            jnp.asarray(valid),
            top_p=0.8,
            top_k=25,
            win_size=10,
            tau_r=0.1,
        )
    )
    ref, repeated = [], 0
    for i in range(b):
        decoded = recent[i][valid[i]].tolist()
        ref.append(np_ras(probs[i], u1[i], u2[i], decoded))
        repeated += int(np_nucleus(probs[i], u1[i], 0.8, 25) in decoded[-10:])
    np.testing.assert_array_equal(ours, ref)
    assert 0 < repeated < b, "both RAS branches must be exercised"


def test_categorical_frequencies():
    weights = jnp.asarray([0.0, 0.1, 0.0, 0.6, 0.3])
    u = jax.random.uniform(jax.random.key(3), (40000,))
    idx = np.asarray(jax.vmap(lambda x: sampling.categorical(weights, x))(u))
    freq = np.bincount(idx, minlength=5) / idx.size
    np.testing.assert_allclose(freq, [0.0, 0.1, 0.0, 0.6, 0.3], atol=0.01)
    assert freq[0] == 0 and freq[2] == 0


def test_sample_tokens_deterministic_and_forbidden():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(8, 30)).astype(np.float32) * 2)
    logits = logits.at[:, 5].set(8.0)  # token 5 dominates: almost every plain draw is 5
    forbidden = jnp.zeros((8, 30), bool).at[:4, 5].set(True)
    cfg = sampling.SamplingConfig()
    a = sample_tokens(logits, jax.random.key(7), cfg, forbidden=forbidden)
    b = sample_tokens(logits, jax.random.key(7), cfg, forbidden=forbidden)
    np.testing.assert_array_equal(a, b)
    assert not np.any(np.asarray(a[:4]) == 5)
    assert np.all(np.asarray(a[4:]) == 5)
    runs = [np.asarray(sample_tokens(logits, jax.random.key(k), cfg, forbidden=forbidden)) for k in range(6)]
    assert len({r[:4].tobytes() for r in runs}) > 1, "different keys must give different draws"


def test_per_row_keys_make_rows_independent_of_the_batch():
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(5, 40)).astype(np.float32))
    recent = jnp.asarray(rng.integers(0, 40, size=(5, 10)).astype(np.int32))
    valid = jnp.ones((5, 10), bool)
    keys = jax.random.split(jax.random.key(9), 5)
    cfg = sampling.SamplingConfig(top_k=10, top_p=0.9)
    batch = np.asarray(sample_tokens(logits, keys, cfg, recent=recent, recent_valid=valid))
    for i in range(5):
        one = sample_tokens(
            logits[i : i + 1], keys[i : i + 1], cfg, recent=recent[i : i + 1], recent_valid=valid[i : i + 1]
        )
        assert int(one[0]) == batch[i]


def test_sample_tokens_falls_back_when_only_forbidden_in_nucleus():
    logits = jnp.zeros((2, 10)).at[:, 3].set(40.0)  # nucleus = {3} only
    forbidden = jnp.zeros((2, 10), bool).at[0, 3].set(True)
    cfg = sampling.SamplingConfig(method="nucleus", max_trials=5)
    out = np.asarray(sample_tokens(logits, jax.random.key(0), cfg, forbidden=forbidden))
    assert out[0] != 3 and out[1] == 3


def test_greedy_and_temperature():
    logits = jnp.asarray([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    greedy = sampling.SamplingConfig(method="greedy")
    np.testing.assert_array_equal(sample_tokens(logits, jax.random.key(0), greedy), [1, 0])
    forb = jnp.asarray([[False, True, False], [False, False, False]])
    np.testing.assert_array_equal(sample_tokens(logits, jax.random.key(0), greedy, forbidden=forb), [2, 0])
    cold = sampling.SamplingConfig(method="random", temperature=1e-3)
    for k in range(5):
        np.testing.assert_array_equal(sample_tokens(logits, jax.random.key(k), cold), [1, 0])


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="method"):
        sampling.SamplingConfig(method="beam")
    with pytest.raises(ValueError, match="top_p"):
        sampling.SamplingConfig(top_p=0.0)
