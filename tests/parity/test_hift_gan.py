"""HiFT GAN training steps: pure, jit-able, and they train (tiny generator and discriminators)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.convert.mapping import expected_shapes
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.discriminators import MultiPeriodDiscriminator, MultipleDiscriminator, MultiResSpecDiscriminator
from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator
from sovits2_jax.train.gan_losses import GanLossWeights
from sovits2_jax.train.hift_gan import adam_with_clip, make_gan_steps

GEN = HiFTConfig(
    base_channels=16,
    f0_cond_channels=8,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1,),),
    source_resblock_dilation_sizes=((1,), (1,), (1,)),
)


def _random(make, seed):
    rng = np.random.default_rng(seed)
    flat = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in expected_shapes(make).items()}
    flat = {k: np.abs(v) + 0.5 if k.endswith((".g", ".alpha")) else v for k, v in flat.items()}
    return params_from_flat(make, flat)


def test_gan_train_step_updates_both_players_and_lowers_the_discriminator_loss():
    g_graphdef, g_params = _random(lambda: HiFTGenerator(GEN, rngs=nnx.Rngs(0)), 0)
    make_d = lambda: MultipleDiscriminator(
        rngs=nnx.Rngs(0),
        mpd=MultiPeriodDiscriminator(periods=(2, 3), channels=(4, 8), rngs=nnx.Rngs(0)),
        mrd=MultiResSpecDiscriminator((256,), (64,), (128,), rngs=nnx.Rngs(0)),
    )
    d_graphdef, d_params = _random(make_d, 1)
    init_state, _, _, train_step = make_gan_steps(
        g_graphdef, d_graphdef, adam_with_clip(2e-3, 5.0), adam_with_clip(2e-3, 5.0), weights=GanLossWeights()
    )
    rng = np.random.default_rng(2)
    frames = 8
    t = np.arange(frames * 480) / 24000
    batch = {
        "speech": jnp.asarray(0.3 * np.sin(2 * np.pi * 200 * t)[None], jnp.float32),
        "speech_feat": jnp.asarray(rng.standard_normal((1, frames, 80)) - 4.0, jnp.float32),
        "pitch_feat": jnp.full((1, frames), 200.0),
    }
    state = init_state(g_params, d_params)
    step = jax.jit(train_step)
    first, metrics = step(state, batch, jax.random.key(0))
    assert set(metrics) >= {"d/loss", "d/loss_disc", "d/loss_tpr", "g/loss", "g/loss_mel", "g/loss_f0", "g/loss_fm"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for before, after in ((state.g_params, first.g_params), (state.d_params, first.d_params)):
        moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
        assert max(moved) > 0
    # Repeated steps on the same batch: the discriminator learns to separate real from generated.
    s, losses = first, [float(metrics["d/loss_disc"])]
    for i in range(4):
        s, m = step(s, batch, jax.random.key(i + 1))
        losses.append(float(m["d/loss_disc"]))
    assert losses[-1] < losses[0]
