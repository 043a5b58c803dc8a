"""Flow model behaviour without torch: batched inference equals per-row inference, the loss and its draws, and
8-simulated-device sharding equal to one device."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from sovits2_jax.configs.flow import tiny_config
from sovits2_jax.convert.params import params_from_flat, params_to_flat
from sovits2_jax.models.flow import CausalMaskedDiffWithXvec
from sovits2_jax.models.flow.config import EncoderConfig, EstimatorConfig, FlowConfig
from sovits2_jax.models.flow.flow import draw_training_randomness
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.parallel.rules import SHARDING_RULES
from sovits2_jax.parallel.sharding import activation_rules, param_shardings, split_params

# Smaller than the parity "tiny" (no torch here, so the reference's hard-coded 512-wide encoder does not bind).
CFG = FlowConfig(
    vocab_size=64,
    input_size=64,
    spk_embed_dim=16,
    encoder=EncoderConfig(
        input_size=64, output_size=64, attention_heads=4, linear_units=128, num_blocks=1, num_up_blocks=1
    ),
    estimator=EstimatorConfig(channels=(32,), attention_head_dim=16, n_blocks=1, num_mid_blocks=1, num_heads=2),
)
PROMPTS = np.array([12, 7, 20])
TOKENS = np.array([30, 41, 25])


def make_model():
    return CausalMaskedDiffWithXvec(CFG, rngs=nnx.Rngs(5))


@pytest.fixture(scope="module")
def model_state():
    return split_params(make_model())


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    b, p, t = len(PROMPTS), PROMPTS.max(), TOKENS.max()
    return dict(
        tokens=rng.integers(0, CFG.vocab_size, (b, t)).astype(np.int32),
        token_lengths=TOKENS.astype(np.int32),
        prompt_tokens=rng.integers(0, CFG.vocab_size, (b, p)).astype(np.int32),
        prompt_token_lengths=PROMPTS.astype(np.int32),
        prompt_feat=rng.standard_normal((b, 2 * p, 80)).astype(np.float32),
        prompt_feat_lengths=(2 * PROMPTS).astype(np.int32),
        embedding=rng.standard_normal((b, CFG.spk_embed_dim)).astype(np.float32),
        noise=rng.standard_normal((b, 2 * (p + t), 80)).astype(np.float32),
    )


def _infer_fn(graphdef, params, batch, streaming, finalize):
    return nnx.merge(graphdef, params).inference(**batch, streaming=streaming, finalize=finalize)


_infer = jax.jit(_infer_fn, static_argnums=0)


def _row(batch, b):
    p, t = PROMPTS[b], TOKENS[b]
    return dict(
        tokens=batch["tokens"][b : b + 1, :t],
        token_lengths=batch["token_lengths"][b : b + 1],
        prompt_tokens=batch["prompt_tokens"][b : b + 1, :p],
        prompt_token_lengths=batch["prompt_token_lengths"][b : b + 1],
        prompt_feat=batch["prompt_feat"][b : b + 1, : 2 * p],
        prompt_feat_lengths=batch["prompt_feat_lengths"][b : b + 1],
        embedding=batch["embedding"][b : b + 1],
        noise=batch["noise"][b : b + 1, : 2 * (p + t)],
    )


@pytest.mark.parametrize("streaming,finalize", [(False, True), (True, False)])
def test_batched_inference_equals_each_row_alone(model_state, streaming, finalize):
    graphdef, params = model_state
    batch = _batch()
    mel, lengths = _infer(graphdef, params, batch, streaming, finalize)
    drop = 0 if finalize else 2 * CFG.encoder.pre_lookahead_len
    np.testing.assert_array_equal(np.asarray(lengths), 2 * TOKENS - drop)
    for b in range(len(TOKENS)):
        one, one_len = _infer(graphdef, params, _row(batch, b), streaming, finalize)
        n = int(one_len[0])
        assert n == int(lengths[b])
        np.testing.assert_allclose(np.asarray(mel[b, :n]), np.asarray(one[0, :n]), atol=1e-4, rtol=1e-4)
        assert not np.any(np.asarray(mel[b, n:]))  # frames past the row's length are zero


def test_reference_padding_semantics_differ_only_near_the_end(model_state):
    """With zero_padding_before_lookahead=False (the reference's training behaviour) a padded row's last
    pre_lookahead tokens see the embedding of padding; with True they see zeros as when the row is alone."""
    graphdef, params = model_state
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((2, 40, CFG.input_size)).astype(np.float32)
    lengths = np.array([40, 29])
    # one compiled program per encoder config and input shape (run eagerly, every op compiles on its own)
    encode = nnx.jit(lambda encoder, xs, lengths: encoder(xs, lengths, streaming=True)[0])
    outs = {}
    for flag in (True, False):
        model = nnx.merge(graphdef, params)
        model.encoder.cfg = dataclasses.replace(model.encoder.cfg, zero_padding_before_lookahead=flag)
        outs[flag] = np.asarray(encode(model.encoder, jnp.asarray(xs), jnp.asarray(lengths)))
    encoder = nnx.merge(graphdef, params).encoder
    alone = np.asarray(encode(encoder, jnp.asarray(xs[1:, :29]), jnp.asarray([29])))
    np.testing.assert_allclose(outs[True][1, :58], alone[0], atol=1e-4, rtol=1e-4)
    diff = np.abs(outs[False][1, :58] - alone[0]).max(axis=-1)
    # streaming chunks of 50 frames: frames of chunk 0 cannot see the last 3 tokens (frames 52..57); those move
    assert diff[:50].max() < 1e-4 < diff[52:].max()


def _train_batch(seed=0):
    rng = np.random.default_rng(seed)
    b, t = 8, 24
    lengths = np.array([24, 20, 17, 24, 11, 9, 24, 15], np.int32)
    return dict(
        speech_token=rng.integers(0, CFG.vocab_size, (b, t)).astype(np.int32),
        speech_token_len=lengths,
        speech_feat=rng.standard_normal((b, 2 * t, 80)).astype(np.float32),
        speech_feat_len=2 * lengths,
        embedding=rng.standard_normal((b, CFG.spk_embed_dim)).astype(np.float32),
    )


def test_training_draws_follow_the_reference_distribution():
    batch = _train_batch()
    draws = [draw_training_randomness(jax.random.key(i), batch, CFG) for i in range(200)]
    streaming = np.array([bool(d["streaming"]) for d in draws])
    prefix = np.stack([np.asarray(d["cond_lengths"]) for d in draws])
    keep = np.stack([np.asarray(d["keep_cond"]) for d in draws])
    assert 0.35 < streaming.mean() < 0.65
    assert 0.4 < (prefix == 0).mean() < 0.65  # p 0.5 of no prompt, plus index 0
    assert np.all(prefix <= np.floor(0.3 * batch["speech_feat_len"]))
    assert 0.75 < keep.mean() < 0.85  # CFG dropout 0.2


def _loss_and_grads(graphdef, params, batch, key):
    def loss(p):
        return nnx.merge(graphdef, p).loss(batch, key)

    return jax.value_and_grad(loss)(params)


def test_loss_is_finite_and_learns_from_every_part(model_state):
    graphdef, params = model_state
    value, grads = jax.jit(_loss_and_grads, static_argnums=0)(graphdef, params, _train_batch(), jax.random.key(0))
    assert np.isfinite(float(value)) and float(value) > 0
    flat = dict(nnx.to_flat_state(grads))
    for path in [
        ("input_embedding", "embedding"),
        ("encoder", "blocks", 0, "attn", "pos_bias_u"),
        ("estimator", "final_proj", "kernel"),
        ("speaker_projection", "kernel"),
    ]:
        assert np.abs(np.asarray(flat[path][...])).max() > 0, path


def test_sharded_on_8_devices_equals_one_device(model_state):
    assert jax.device_count() == 8
    graphdef, params = model_state
    batch = _train_batch()
    key = jax.random.key(3)
    step = jax.jit(_loss_and_grads, static_argnums=0)
    loss1, grads1 = step(graphdef, params, batch, key)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = param_shardings(params, mesh, SHARDING_RULES)
    # the single-device values, placed directly onto the mesh
    sh_graphdef, sh_params = params_from_flat(make_model, params_to_flat(params), shardings)
    kernel = sh_params["estimator"]["mid"][0]["transformers"][0]["ff_in"]["kernel"][...]
    assert kernel.sharding.shard_shape(kernel.shape) == (16, 64)  # really split over fsdp and tensor
    batch_sh = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh), activation_rules(SHARDING_RULES):
        sharded_step = jax.jit(
            _loss_and_grads,
            static_argnums=0,
            in_shardings=(shardings, batch_sh, None),
            out_shardings=(NamedSharding(mesh, PartitionSpec()), shardings),
        )
        loss8, grads8 = sharded_step(sh_graphdef, sh_params, jax.device_put(batch, batch_sh), key)
        infer = _batch()
        infer = {k: np.concatenate([v, v[:1]]) for k, v in infer.items()}  # 4 rows over data*fsdp = 4
        mel8, len8 = _infer(sh_graphdef, sh_params, jax.device_put(infer, batch_sh), True, True)
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4), grads8, grads1
    )
    mel1, len1 = _infer(graphdef, params, infer, True, True)
    np.testing.assert_array_equal(np.asarray(len8), np.asarray(len1))
    np.testing.assert_allclose(np.asarray(mel8), np.asarray(mel1), atol=1e-4, rtol=1e-4)


def test_config_round_trip_and_errors():
    cfg = tiny_config()
    assert FlowConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"estimator\.in_channels"):
        FlowConfig(estimator=dataclasses.replace(cfg.estimator, in_channels=300))
    with pytest.raises(ValueError, match="unknown flow config keys"):
        FlowConfig.from_dict({"bogus": 1})


def test_encoder_dropout_is_a_pure_function_of_its_key(model_state):
    graphdef, params = model_state
    batch = _train_batch()
    draws = draw_training_randomness(jax.random.key(0), batch, CFG)

    @jax.jit
    def loss(params, key):
        return nnx.merge(graphdef, params).loss_with_draws(batch, dropout_key=key, **draws)

    @jax.jit
    def loss_eval(params):
        return nnx.merge(graphdef, params).loss_with_draws(batch, **draws)

    a, b, c = (float(loss(params, jax.random.key(k))) for k in (1, 1, 2))
    assert a == b and a != c  # same key, same masks; another key, other masks
    assert float(loss_eval(params)) == float(loss_eval(params)) != a
