"""Pure HiFT GAN training steps (CosyVoice2's alternating discriminator / generator turns on one batch), outside
the trainer (tests, ``bench.hift``); the losses are the ``hift`` family's (``train/hift.py``).

``make_gan_steps`` returns jit-able functions of explicit state: ``(g_params, d_params, g_opt, d_opt)``, a batch
``{"speech": [B, T*480], "speech_feat": [B, T, 80], "pitch_feat": [B, T]}`` and an rng key. ``train_step`` runs the
discriminator turn, then the generator turn with the same key (so both see the same generated waveform, as the
reference's two forward passes with the same noise would).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import optax
from flax import nnx

from sovits2_jax.train.families.hift import discriminator_terms, gan_mel_fns, generator_terms
from sovits2_jax.train.gan_losses import GanLossWeights


@dataclasses.dataclass(frozen=True)
class GanState:
    g_params: nnx.State
    d_params: nnx.State
    g_opt: optax.OptState
    d_opt: optax.OptState


jax.tree_util.register_dataclass(GanState, data_fields=["g_params", "d_params", "g_opt", "d_opt"], meta_fields=[])


def adam_with_clip(lr: float, grad_clip: float) -> optax.GradientTransformation:
    """Adam (CosyVoice2's optim for G and D) after global-norm clipping (grad_clip 5)."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))


def _update(tx: optax.GradientTransformation, loss_fn: Callable, params, opt_state):
    """One optimizer step on ``loss_fn(params) -> (loss, terms)``: (new params, new opt state, terms)."""
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, terms


def make_gan_steps(
    g_graphdef: nnx.GraphDef,
    d_graphdef: nnx.GraphDef,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    *,
    mel_fns: Sequence[Callable] | None = None,
    weights: GanLossWeights = GanLossWeights(),
):
    """(init_state, discriminator_step, generator_step, train_step), all pure."""
    mel_fns = list(mel_fns) if mel_fns is not None else gan_mel_fns()

    def init_state(g_params, d_params) -> GanState:
        return GanState(g_params, d_params, g_tx.init(g_params), d_tx.init(d_params))

    def discriminator_step(state: GanState, batch, rng):
        generator = nnx.merge(g_graphdef, state.g_params)

        def loss_fn(d_params):
            terms = discriminator_terms(generator, nnx.merge(d_graphdef, d_params), batch, rng, weights)
            return terms["loss"], terms

        d_params, d_opt, terms = _update(d_tx, loss_fn, state.d_params, state.d_opt)
        return dataclasses.replace(state, d_params=d_params, d_opt=d_opt), terms

    def generator_step(state: GanState, batch, rng):
        def loss_fn(g_params):
            generator, discriminator = nnx.merge(g_graphdef, g_params), nnx.merge(d_graphdef, state.d_params)
            terms = generator_terms(generator, discriminator, batch, rng, mel_fns, weights)
            return terms["loss"], terms

        g_params, g_opt, terms = _update(g_tx, loss_fn, state.g_params, state.g_opt)
        return dataclasses.replace(state, g_params=g_params, g_opt=g_opt), terms

    def train_step(state: GanState, batch, rng):
        state, d_terms = discriminator_step(state, batch, rng)
        state, g_terms = generator_step(state, batch, rng)
        metrics = {f"d/{k}": v for k, v in d_terms.items()} | {f"g/{k}": v for k, v in g_terms.items()}
        return state, metrics

    return init_state, discriminator_step, generator_step, train_step
