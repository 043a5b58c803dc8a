"""Qwen2 model mechanics: KV cache vs full forward, per-row cache positions, packing masks, layer switches."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert.mapping import flatten, stack_layers
from sovits2_jax.convert.params import params_from_flat, params_to_flat
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM, init_cache

CONFIG = Qwen2Config(
    vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, rope_theta=1e4
)


@pytest.fixture(scope="module")
def model():
    return Qwen2ForCausalLM(CONFIG, rngs=nnx.Rngs(0))


@nnx.jit
def _run(model, ids, **inputs):
    """``model(ids, **inputs)`` compiled as one program per input shape (run eagerly, every op of the forward is
    compiled on its own for each shape: most of these tests' time)."""
    return model(ids, **inputs)


def test_cache_prefill_and_decode_equal_full_forward(model):
    ids = jax.random.randint(jax.random.key(1), (2, 12), 0, CONFIG.vocab_size)
    full, _ = _run(model, ids)
    cache = init_cache(CONFIG, 2, 16)
    logits, cache = _run(model, ids[:, :7], cache=cache)
    steps = [logits]
    for t in range(7, 12):
        logits, cache = _run(model, ids[:, t : t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.index.tolist() == [12, 12]


def test_rows_with_different_prompt_lengths(model):
    """Right-padded prompts: each row continues from its own length and matches its own unpadded run."""
    rng = np.random.default_rng(0)
    lengths = [5, 9]
    prompts = rng.integers(0, CONFIG.vocab_size, (2, 9))
    nxt = rng.integers(0, CONFIG.vocab_size, (2, 3))
    mask = np.arange(9)[None] < np.array(lengths)[:, None]
    cache = init_cache(CONFIG, 2, 16)
    _, cache = _run(model, jnp.asarray(prompts), attention_mask=jnp.asarray(mask), cache=cache)
    cache = dataclasses.replace(cache, index=jnp.asarray(lengths, jnp.int32))
    outs = []
    for t in range(3):
        logits, cache = _run(model, jnp.asarray(nxt[:, t : t + 1]), cache=cache)
        outs.append(logits)
    batched = np.concatenate(outs, 1)
    for b, n in enumerate(lengths):
        single, _ = _run(model, jnp.asarray(np.concatenate([prompts[b, :n], nxt[b]])[None]))
        np.testing.assert_allclose(batched[b], single[0, n:], atol=1e-5, rtol=0)


def test_packed_segments_do_not_attend_across(model):
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, CONFIG.vocab_size, 6), rng.integers(0, CONFIG.vocab_size, 4)
    packed = np.concatenate([a, b])[None]
    segments = np.array([[1] * 6 + [2] * 4])
    positions = np.array([list(range(6)) + list(range(4))])
    logits, _ = _run(model, jnp.asarray(packed), segment_ids=jnp.asarray(segments), positions=jnp.asarray(positions))
    la, _ = _run(model, jnp.asarray(a[None]))
    lb, _ = _run(model, jnp.asarray(b[None]))
    np.testing.assert_allclose(logits[0, :6], la[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits[0, 6:], lb[0], atol=1e-5, rtol=0)
    # a broken mask (no segments) would let b see a:
    leaky, _ = _run(model, jnp.asarray(packed), positions=jnp.asarray(positions))
    assert np.abs(np.asarray(leaky[0, 6:]) - np.asarray(lb[0])).max() > 1e-3


@pytest.mark.parametrize(
    "switches",
    [dict(scan_layers=True), dict(remat_policy="full"), dict(scan_layers=True, remat_policy="dots_no_batch")],
)
def test_scan_and_remat_give_same_values_and_grads(model, switches):
    flat = params_to_flat(nnx.split(model, nnx.Param)[1])
    variant = dataclasses.replace(CONFIG, **switches)
    if variant.scan_layers:
        flat = stack_layers(flat, "model.layers")
    graphdef, params = params_from_flat(lambda: Qwen2ForCausalLM(variant, rngs=nnx.Rngs(1)), flat)
    ids = jax.random.randint(jax.random.key(2), (2, 10), 0, CONFIG.vocab_size)

    def loss(params, graphdef):
        return jnp.mean(nnx.merge(graphdef, params)(ids)[0] ** 2)

    ref_graphdef, ref_params = nnx.split(model, nnx.Param)
    l0, g0 = jax.value_and_grad(loss)(ref_params, ref_graphdef)
    l1, g1 = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, graphdef)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    g0, g1 = params_to_flat(g0), params_to_flat(g1)
    if variant.scan_layers:
        g0 = stack_layers(g0, "model.layers")
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], atol=1e-6, rtol=0, err_msg=k)


def test_scanned_params_carry_layer_axis():
    scanned = Qwen2ForCausalLM(dataclasses.replace(CONFIG, scan_layers=True), rngs=nnx.Rngs(0))
    _, params = nnx.split(scanned, nnx.Param)
    for path, v in nnx.to_flat_state(params):
        if "layers" in path:
            assert v.get_metadata()["logical_axes"][0] == "layers"
            assert v.shape[0] == CONFIG.num_layers
    assert "model.layers.attention.query.kernel" in flatten(nnx.to_pure_dict(params))


def test_hidden_states_and_xla_attention(model):
    ids = jax.random.randint(jax.random.key(3), (1, 8), 0, CONFIG.vocab_size)
    logits, _, hidden = model(ids, return_hidden=True)
    assert hidden.shape == (CONFIG.num_layers + 1, 1, 8, CONFIG.hidden_size)
    np.testing.assert_allclose(model.logits(hidden[-1]), logits, atol=1e-6)
    xla = Qwen2ForCausalLM(dataclasses.replace(CONFIG, attention_impl="xla"), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(xla(ids)[0], logits, atol=1e-6)
