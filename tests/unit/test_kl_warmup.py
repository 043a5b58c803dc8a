"""The VITS KL warm-up (``config.model.kl_warmup_steps``): a phase marked ``takes_step`` gets the train step's
step number, and the VITS generator objective then scales its KL term and the posterior's noise by
min(step / warm-up, 1); eval (no step) scores the full objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs import qwen2, vits2
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib
from sovits2_jax.train import vits_losses
from sovits2_jax.train.families import vits as vits_family


class Scale(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((2,)))


def loss_with_step(models, batch, rng, train, step=None):
    loss = jnp.sum(jnp.square(models["model"].w[...] - 3.0))
    return loss, {"seen_step": jnp.float32(-1.0) if step is None else jnp.asarray(step, jnp.float32)}


def loss_without_step(models, batch, rng, train):
    return jnp.sum(jnp.square(models["model"].w[...])), {}


class StepFamily(family_lib.Family):
    name = "step_toy"

    def players(self, config):
        return [family_lib.Player("model", lambda: Scale(nnx.Rngs(0)), config.train.optimizer)]

    def phases(self, config):
        return [family_lib.Phase("model", loss_without_step),
                family_lib.Phase("model", loss_with_step, takes_step=True)]  # fmt: skip

    def eval_loss(self, config):
        return loss_with_step

    def export_meta(self, config):
        return {"format": "none"}


def test_a_phase_that_takes_the_step_gets_the_traced_step_and_eval_gets_none():
    config = qwen2.get_config("tiny")
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    family = StepFamily()
    built = state_lib.build(family, config, mesh)
    with jax.set_mesh(mesh):
        train_step = jax.jit(step_lib.make_train_step(family, config, built.graphdefs, built.txs))
        state, metrics = train_step(built.state, {"x": jnp.zeros((2,))}, 7)
        assert float(metrics["model/seen_step"]) == 7.0
        _, metrics = train_step(state, {"x": jnp.zeros((2,))}, 123)  # the same compiled step, another value
        assert float(metrics["model/seen_step"]) == 123.0
        eval_step = jax.jit(step_lib.make_eval_step(family, config, built.graphdefs))
        scalars, _ = eval_step(built.state.params, {"x": jnp.zeros((2,))}, 0)
    assert float(scalars["seen_step"]) == -1.0


def _model_and_batch(warmup: int):
    cfg = vits2.model_config("tiny").replace(kl_warmup_steps=warmup)
    model = SynthesizerTrn(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    b, t, hop = 2, 20, cfg.hop_length
    batch = {
        "codes": jnp.asarray(rng.integers(0, 64, (b, t // 2)), jnp.int32),
        "spec": jnp.asarray(rng.random((b, t, cfg.spec_channels)), jnp.float32),
        "spec_len": jnp.asarray([t, t - 2], jnp.int32),
        "text": jnp.asarray(rng.integers(1, 64, (b, 6)), jnp.int32),
        "text_len": jnp.asarray([6, 4], jnp.int32),
        "wav": jnp.asarray(rng.standard_normal((b, t * hop)) * 0.1, jnp.float32),
    }
    return model, batch


def test_warmup_fraction_ramps_and_saturates():
    cfg = vits2.model_config("tiny").replace(kl_warmup_steps=10)
    assert [float(vits_losses.warmup_fraction(cfg, s)) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert float(vits_losses.warmup_fraction(cfg, None)) == 1.0
    assert float(vits_losses.warmup_fraction(cfg.replace(kl_warmup_steps=0), 0)) == 1.0
    with pytest.raises(ValueError, match="kl_warmup_steps"):
        cfg.replace(kl_warmup_steps=-1)


def test_the_generator_objective_scales_the_kl_and_the_posterior_noise():
    model, batch = _model_and_batch(warmup=10)
    key = jax.random.key(3)
    start = vits_family.generator_terms(model, None, batch, key, step=0)
    half = vits_family.generator_terms(model, None, batch, key, step=5)
    full = vits_family.generator_terms(model, None, batch, key, step=10)
    assert float(start["loss_kl"]) == 0.0 and float(full["loss_kl"]) != 0.0
    # the same key draws the same noise: at step 0 it is scaled to nothing, so the decoder reads the posterior's
    # mean, which is the deterministic forward at the same slice starts
    out, _, _ = vits_family.generate(model, batch, key, noise_scale=jnp.float32(0.0))
    b, t = batch["spec"].shape[:2]
    zeros = jnp.zeros((b, t, model.cfg.inter_channels))
    mean_only = model(batch["codes"], batch["spec"], batch["spec_len"], batch["text"], batch["text_len"], None,
                      posterior_eps=zeros, slice_starts=out["ids_slice"])  # fmt: skip
    np.testing.assert_allclose(np.asarray(out["y_hat"]), np.asarray(mean_only["y_hat"]), rtol=1e-5, atol=1e-6)
    noisy, _, _ = vits_family.generate(model, batch, key, noise_scale=jnp.float32(1.0))
    assert float(jnp.max(jnp.abs(noisy["z"] - out["z"]))) > 0.1
    half_noise, _, _ = vits_family.generate(model, batch, key, noise_scale=jnp.float32(0.5))
    np.testing.assert_allclose(np.asarray(half_noise["z"] - out["z"]), 0.5 * np.asarray(noisy["z"] - out["z"]),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # without a warm-up the objective is GPT-SoVITS's whatever the step; eval (no step) is the full objective
    plain, _ = _model_and_batch(warmup=0)
    plain_terms = vits_family.generator_terms(plain, None, batch, key, step=0)
    assert float(plain_terms["loss_kl"]) != 0.0
    # half-way: half the KL of the half-noise forward
    o = half_noise
    kl_half = vits_losses.kl_loss(o["z_p"], o["logs_q"], o["m_p"], o["logs_p"], o["mask"]) * model.cfg.c_kl
    np.testing.assert_allclose(float(half["loss_kl"]), 0.5 * float(kl_half), rtol=1e-5)
