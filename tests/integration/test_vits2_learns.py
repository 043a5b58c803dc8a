"""The GPT-SoVITS2 VITS2 layout (S3-style tokens, RoPE, transformer couplings) learns: a hundred Adam steps of the
vits family's generator objective without a discriminator (mel + KL) on synthetic token -> tone speech drive the
mel reconstruction loss well below where it started. Then one step of the trainer's own vits step (discriminator
phase, then generator phase with adversarial / feature-matching terms) runs from those weights and stays finite."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sovits2_jax.audio.spectrogram import linear_spectrogram
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.parallel.sharding import activation_rules, sharded_init, split_params
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib
from sovits2_jax.train.families.vits import generator_terms, param_labels

STEPS = 100


def _tiny_training_config():
    spec = importlib.util.spec_from_file_location("_vits2_cfg", Path(__file__).parents[2] / "configs" / "vits2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("tiny"), module.vits_config


def _tiny_config():
    config, to_model = _tiny_training_config()
    return to_model(config)


def warmup_step(graphdef, tx):
    """One Adam step on the generator objective without a discriminator (mel + KL), pure."""

    def step(params, opt, batch, key):
        def loss(p):
            terms = generator_terms(nnx.merge(graphdef, p), None, batch, key)
            return terms["loss"], terms

        (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, terms

    return step


def synthetic_batch(cfg, n: int, tokens: int, seed: int) -> dict:
    """Each 25 Hz token is 40 ms of a tone whose pitch the token id sets (phase-continuous)."""
    rng = np.random.default_rng(seed)
    vocab = cfg.speech_vocab_size - 3
    codes = rng.integers(0, vocab, (n, tokens))
    per_token = cfg.hop_length * cfg.content_upsample
    freq = np.repeat(150.0 + 45.0 * codes, per_token, axis=1) / cfg.sampling_rate
    wav = (0.4 * np.sin(2 * np.pi * np.cumsum(freq, axis=1))).astype(np.float32)
    spec = linear_spectrogram(wav, n_fft=cfg.n_fft, hop_size=cfg.hop_length, win_size=cfg.win_length)
    frames = tokens * cfg.content_upsample
    assert spec.shape[1] == frames
    text = codes[:, ::2] % cfg.n_symbols
    return dict(
        codes=jnp.asarray(codes, jnp.int32),
        spec=spec,
        spec_len=jnp.full((n,), frames, jnp.int32),
        wav=jnp.asarray(wav),
        text=jnp.asarray(text, jnp.int32),
        text_len=jnp.full((n,), text.shape[1], jnp.int32),
        valid=jnp.ones((n,), bool),
    )


@pytest.fixture(scope="module")
def tiny():
    cfg = _tiny_config()
    graphdef, params = nnx.split(SynthesizerTrn(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    return cfg, graphdef, params


def test_gpt_sovits2_layout_learns_reconstruction(tiny):
    cfg, g_graphdef, g_params = tiny
    assert cfg.flow == "transformer" and cfg.position == "rope" and cfg.content == "tokens"
    g_params = jax.tree.map(jnp.copy, g_params)  # the step donates its state
    assert len(nnx.merge(g_graphdef, g_params).flow.flows[0].enc.attn_layers) == cfg.flow_layers
    data = synthetic_batch(cfg, 8, 20, seed=0)
    tx = optax.adam(2e-3)
    step = jax.jit(warmup_step(g_graphdef, tx), donate_argnums=(0, 1))
    g_params, opt = g_params, tx.init(g_params)
    key = jax.random.key(0)
    mel = []
    for i in range(STEPS):
        idx = np.arange(4) + 4 * (i % 2)
        batch = {k: v[idx] for k, v in data.items()}
        g_params, opt, terms = step(g_params, opt, batch, jax.random.fold_in(key, i))
        mel.append(float(terms["loss_mel"]))
    assert np.isfinite(mel).all()
    # the first steps mostly fix the output level; learning must continue well past that
    start, early, end = mel[0], np.mean(mel[10:20]), np.mean(mel[-10:])
    assert end < 0.5 * start, f"mel loss {start:.3f} -> {end:.3f}"
    assert end < 0.95 * early, f"mel loss stalled: {early:.3f} (steps 10-20) -> {end:.3f}"

    # one step of the trainer's vits step (discriminator phase, then generator phase with adversarial +
    # feature-matching terms) from the warmed-up generator; a single period discriminator keeps the compile short
    # (the full MPD + scale discriminator is checked for parity)
    config, _ = _tiny_training_config()
    config.discriminator.update(periods=(2,), scale_layers="none")
    family = family_lib.get(config.family)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    # the trainer's state, assembled as state_lib.build does, but from the warmed generator: build's jitted
    # re-initialisation of the generator (replaced by the warmed weights anyway) costs a ~40 s compile on CPU;
    # only the small discriminator is initialised here
    rep = state_lib.replicated(mesh)
    players = family.players(config)
    generator, discriminator = players
    assert (generator.name, discriminator.name) == ("generator", "discriminator")
    with jax.set_mesh(mesh), activation_rules(config.sharding.rules):
        d_graphdef, d_params, _ = sharded_init(discriminator.make_model, mesh, config.sharding.rules)
        graphdefs = {"generator": g_graphdef, "discriminator": d_graphdef}
        params = {
            "generator": jax.device_put(nnx.to_pure_dict(g_params), rep),
            "discriminator": nnx.to_pure_dict(d_params),
        }
        state_lib.check_same_layout(params["generator"], nnx.to_pure_dict(nnx.eval_shape(
            lambda: split_params(generator.make_model())[1])), "warmed generator")  # fmt: skip
        built = state_lib.from_params(players, config, mesh, graphdefs, params)
        gan_step = jax.jit(step_lib.make_train_step(family, config, graphdefs, built.txs))
        gstate, metrics = gan_step(built.state, {k: v[:2] for k, v in data.items()}, jnp.int32(0))
    for name in ("discriminator/loss_disc", "generator/loss_gen", "generator/loss_fm", "generator/loss_mel",
                 "generator/loss_kl"):  # fmt: skip
        assert np.isfinite(float(metrics[name])), name
    assert float(metrics["skipped"]) == 0.0

    # the trained decoder synthesises the right length from codes + text + a reference
    model = nnx.merge(g_graphdef, gstate.params["generator"])
    # jitted: one ~5 s compile instead of ~14 s of eager op-by-op execution
    wav = nnx.jit(lambda m, codes, text, spec: m.decode(codes, text, spec, 0.0))(
        model, data["codes"][:1], data["text"][:1], data["spec"][:1]
    )
    assert wav.shape == (1, 40 * cfg.hop_length) and np.isfinite(np.asarray(wav)).all()


def test_training_dropout_follows_the_key(tiny):
    cfg, _, params = tiny
    cfg = cfg.replace(p_dropout=0.1)  # same parameters, dropout switched on
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: SynthesizerTrn(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    data = synthetic_batch(cfg, 2, 20, seed=1)
    fixed = dict(posterior_eps=jnp.zeros((2, 40, cfg.inter_channels)), slice_starts=jnp.array([0, 3]))

    @jax.jit
    def m_p(params, key):
        out = nnx.merge(graphdef, params)(
            data["codes"], data["spec"], data["spec_len"], data["text"], data["text_len"], key, **fixed
        )
        return out["m_p"]

    eval_mode = np.asarray(m_p(params, None))
    a, a_again, b = (np.asarray(m_p(params, jax.random.key(k))) for k in (1, 1, 2))
    np.testing.assert_array_equal(a, a_again)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - eval_mode).max() > 1e-3


def test_per_token_text_features_and_bpe_ids_shapes():
    """GPT-SoVITS2 text input either as BPE ids (Qwen vocabulary) or per-token features (BGE-M3 style, 1024-d)."""
    built = {}
    base = _tiny_config()

    def prior_shapes(cfg, text):
        if cfg not in built:
            built[cfg] = nnx.split(nnx.eval_shape(lambda: SynthesizerTrn(cfg, rngs=nnx.Rngs(0))))
        graphdef, state = built[cfg]
        model = nnx.merge(graphdef, state)
        assert len(model.flow.flows[0].enc.attn_layers) == cfg.flow_layers

        def run(state, codes, text, refer):
            m = nnx.merge(graphdef, state)
            return m.prior(codes, text, m.style(refer))

        codes = jax.ShapeDtypeStruct((2, 12), jnp.int32)
        refer = jax.ShapeDtypeStruct((2, 30, cfg.spec_channels), jnp.float32)
        return jax.eval_shape(run, state, codes, text, refer)

    for cfg, text in (
        (base, jax.ShapeDtypeStruct((2, 9), jnp.int32)),
        (base.replace(text_input="features"), jax.ShapeDtypeStruct((2, 9, 1024), jnp.float32)),
    ):
        m, _, mask = prior_shapes(cfg, text)
        assert m.shape == (2, 24, cfg.inter_channels) and mask.shape == (2, 24, 1)
    with pytest.raises(ValueError, match="text features must be"):
        prior_shapes(base.replace(text_input="features"), jax.ShapeDtypeStruct((2, 9), jnp.int32))


def test_gpt_sovits_parameter_groups_freeze_quantizer_and_slow_text(tiny):
    from sovits2_jax.configs.common import optimizer_config
    from sovits2_jax.train.optim import make_optimizer

    hubert = _tiny_config().replace(content="hubert_vq", ssl_dim=32, codebook_size=16, flow="wavenet")
    abstract = nnx.state(nnx.eval_shape(lambda: SynthesizerTrn(hubert, rngs=nnx.Rngs(0))), nnx.Param)
    labels = nnx.to_pure_dict(param_labels(abstract))
    assert labels["quantizer"]["layers"][0]["embed"] == "frozen" and labels["ssl_proj"]["kernel"] == "frozen"
    assert (
        labels["enc_p"]["text_embedding"]["embedding"] == "text"
        and labels["enc_p"]["mrte"]["c_pre"]["kernel"] == "text"
    )
    assert labels["dec"]["conv_pre"]["kernel"] == "base"
    # the trainer's optimizer on these groups: frozen params do not move, text params move at 0.4x the base step
    params = nnx.to_pure_dict(nnx.state(SynthesizerTrn(hubert, rngs=nnx.Rngs(0)), nnx.Param))
    section = optimizer_config(name="adamw", lr=1e-2, b1=0.8, b2=0.99, eps=1e-9, lr_scale={"text": 0.4})
    tx, _ = make_optimizer(section, 10, param_labels, params)
    grads = jax.tree.map(jnp.ones_like, params)
    up, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(up["enc_p"]["text_embedding"]["embedding"]), -0.4e-2, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(up["dec"]["conv_pre"]["bias"]), -1e-2, rtol=1e-4)
    assert not np.any(np.asarray(up["quantizer"]["layers"][0]["embed"]))
    assert not np.any(np.asarray(up["ssl_proj"]["kernel"]))
