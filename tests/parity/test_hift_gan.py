"""HiFT GAN training through the trainer's own step (the hift family's two phases: discriminator, then generator):
pure, jit-able, and it trains (tiny generator and discriminators)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.configs import cosyvoice2
from sovits2_jax.convert.mapping import expected_shapes, unflatten
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.parallel.sharding import activation_rules, split_params
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib

GEN = dict(base_channels=16, f0_cond_channels=8, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
           source_resblock_dilation_sizes=((1,), (1,), (1,)))  # fmt: skip
DISC = dict(mpd_periods=(2, 3), mpd_channels=(4, 8), mrd_fft_sizes=(256,), mrd_hop_sizes=(64,),
            mrd_win_lengths=(128,))  # fmt: skip


def _config():
    config = cosyvoice2.get_config("hift_tiny")
    config.model.update(GEN)
    config.discriminator.update(DISC)
    config.train.optimizer.update(lr=2e-3, grad_clip=5.0)
    config.train.optimizer_d.update(lr=2e-3, grad_clip=5.0)
    return config


def _random_params(players, seed):
    """Random params per player, scaled so the tiny GAN moves (weight-norm gains and Snake alphas positive)."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in players:
        flat = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in expected_shapes(p.make_model).items()}
        flat = {k: np.abs(v) + 0.5 if k.endswith((".g", ".alpha")) else v for k, v in flat.items()}
        out[p.name] = unflatten(flat)
    return out


def _build(players, config, mesh, params):
    """The trainer's state as ``state_lib.build(..., init_params=lambda _: params)`` makes it, without build's
    jitted random init of every player (thrown away for ``params`` anyway; a ~20 s compile on CPU): graphdefs and
    layouts from abstract models, then ``state_lib.from_params`` as build."""
    rep = state_lib.replicated(mesh)
    graphdefs, placed = {}, {}
    for p in players:
        graphdefs[p.name], abstract = split_params(nnx.eval_shape(p.make_model))
        abstract = nnx.to_pure_dict(abstract)
        state_lib.check_same_layout(params[p.name], abstract, p.name)
        placed[p.name] = jax.tree.map(lambda x, ref: jax.device_put(np.asarray(x, ref.dtype), rep), params[p.name],
                                      abstract)  # fmt: skip
    return state_lib.from_params(players, config, mesh, graphdefs, placed)


def test_gan_train_step_updates_both_players_and_lowers_the_discriminator_loss():
    config = _config()
    family = family_lib.get(config.family)
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    players = family.players(config)
    randoms = _random_params(players, 0)
    with jax.set_mesh(mesh), activation_rules(config.sharding.rules):
        built = _build(players, config, mesh, randoms)
        step = jax.jit(step_lib.make_train_step(family, config, built.graphdefs, built.txs))
        rng = np.random.default_rng(2)
        frames = 8
        t = np.arange(frames * 480) / 24000
        batch = {
            "speech": jnp.asarray(0.3 * np.sin(2 * np.pi * 200 * t)[None], jnp.float32),
            "speech_feat": jnp.asarray(rng.standard_normal((1, frames, 80)) - 4.0, jnp.float32),
            "pitch_feat": jnp.full((1, frames), 200.0),
            "speech_feat_len": jnp.array([frames], jnp.int32),
            "valid": jnp.array([True]),
        }
        state = built.state
        first, metrics = step(state, batch, jnp.int32(0))
        want = {"discriminator/loss", "discriminator/loss_disc", "discriminator/loss_tpr", "generator/loss",
                "generator/loss_mel", "generator/loss_f0", "generator/loss_fm"}  # fmt: skip
        assert set(metrics) >= want
        assert all(np.isfinite(float(v)) for v in metrics.values())
        assert float(metrics["skipped"]) == 0.0
        for player in ("generator", "discriminator"):
            moved = [
                float(jnp.abs(a - b).max())
                for a, b in zip(jax.tree.leaves(state.params[player]), jax.tree.leaves(first.params[player]))
            ]
            assert max(moved) > 0, player
        # Repeated steps on the same batch: the discriminator learns to separate real from generated.
        s, losses = first, [float(metrics["discriminator/loss_disc"])]
        for i in range(4):
            s, m = step(s, batch, jnp.int32(i + 1))
            losses.append(float(m["discriminator/loss_disc"]))
        assert losses[-1] < losses[0]
