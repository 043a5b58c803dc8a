"""The pure train and eval steps: a family's phases over (micro)batches, optimizer updates, skipped bad steps.

A train step runs the phases in order; each differentiates its loss w.r.t. one player and applies that player's
optimizer. With ``accum_steps = k`` the batch splits into k strided microbatches (row ``i`` goes to microbatch
``i % k``, so each microbatch keeps the batch's data-parallel layout) run under ``lax.scan``: one microbatch's
activations live at a time, and gradients and aux terms combine weighted by ``aux["weight"]``. A step whose loss or
gradient norm is not finite (or, with ``spike_factor``, whose loss jumps above the running mean) returns the old
params, optimizer state and buffers unchanged and counts itself in ``skipped``.

Buffers (``Family.init_buffers``, non-gradient state): when the state carries any, each loss gets them as its fifth
argument and may return new ones as ``aux["buffers"]``; phase i+1 sees what phase i left, microbatch j+1 what
microbatch j left, and the step's result holds the last.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sovits2_jax.train.family import BUFFERS
from sovits2_jax.train.state import TrainState

EMA = 0.99


def step_key(seed: int, step) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), step)


def eval_key(seed: int, index) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed + 1), index)


def merged(graphdefs: dict, params: dict) -> dict:
    return {name: nnx.merge(graphdefs[name], params[name]) for name in graphdefs}


def _scalars(aux: dict) -> dict:
    return {k: jnp.asarray(v, jnp.float32) for k, v in aux.items() if k not in ("weight", BUFFERS)}


def call_loss(loss, models: dict, batch: dict, rng: jax.Array, train: bool, buffers: dict):
    """``loss(models, batch, rng, train[, buffers])`` -> (loss, aux, the buffers after it): buffers are passed
    when there are any, and the loss's ``aux["buffers"]`` replace those of the players it names."""
    if not buffers:
        loss_value, aux = loss(models, batch, rng, train)
        return loss_value, aux, buffers
    loss_value, aux = loss(models, batch, rng, train, buffers)
    new = aux.get(BUFFERS) or {}
    unknown = set(new) - set(buffers)
    if unknown:
        raise ValueError(f"a loss returned buffers of {sorted(unknown)}, which have none (players {sorted(buffers)})")
    return loss_value, aux, {**buffers, **new}


def _split(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...] with microbatch j = rows j, j+k, j+2k, ..."""

    def one(x):
        if x.shape[0] % k:
            raise ValueError(f"a batch of {x.shape[0]} rows does not split into accum_steps={k} microbatches")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(one, batch)


def phase_gradients(
    phase, graphdefs: dict, params: dict, batch: dict, rng: jax.Array, accum_steps: int, buffers: dict | None = None
):
    """(loss, aux, weight, grads) of one phase, accumulated over ``accum_steps`` microbatches. With ``buffers``
    (non-empty: the state's), ``aux["buffers"]`` is what they became after the phase's (last) microbatch."""
    player = phase.player
    buffers = buffers or {}

    def loss_fn(own, mb, key, bufs):
        models = merged(graphdefs, {**params, player: own})
        loss, aux, bufs = call_loss(phase.loss, models, mb, key, True, bufs)
        weight = jnp.asarray(aux.get("weight", 1.0), jnp.float32)
        return jnp.asarray(loss, jnp.float32), (_scalars(aux), weight, bufs)

    def with_buffers(aux, bufs):
        return {**aux, BUFFERS: bufs} if buffers else aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        (loss, (aux, weight, bufs)), grads = grad_fn(params[player], batch, jax.random.fold_in(rng, 0), buffers)
        return loss, with_buffers(aux, bufs), weight, grads

    def body(carry, xs):
        mb, j = xs
        g_sum, l_sum, a_sum, w_sum, bufs = carry
        (loss, (aux, w, bufs)), g = grad_fn(params[player], mb, jax.random.fold_in(rng, j), bufs)
        g_sum = jax.tree.map(lambda a, b: a + b * w, g_sum, g)
        a_sum = jax.tree.map(lambda a, b: a + b * w, a_sum, aux)
        return (g_sum, l_sum + loss * w, a_sum, w_sum + w, bufs), None

    micro = _split(batch, accum_steps)
    first = jax.tree.map(lambda x: x[0], micro)
    _, (aux_shape, _, _) = jax.eval_shape(loss_fn, params[player], first, rng, buffers)
    zeros = (
        jax.tree.map(jnp.zeros_like, params[player]),
        jnp.float32(0),
        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape),
        jnp.float32(0),
        buffers,
    )
    (g_sum, l_sum, a_sum, w_sum, bufs), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum_steps)))
    inv = jnp.where(w_sum > 0, 1.0 / jnp.where(w_sum > 0, w_sum, 1.0), 0.0)
    grads = jax.tree.map(lambda g: g * inv, g_sum)
    return l_sum * inv, with_buffers(jax.tree.map(lambda a: a * inv, a_sum), bufs), w_sum, grads


def make_train_step(family, config, graphdefs: dict, txs: dict):
    """``train_step(state, batch, step) -> (state, metrics)``, pure (jit it with the state donated)."""
    phases = family.phases(config)
    t = config.train
    seed, k = int(config.seed), int(t.accum_steps)
    several = len(phases) > 1

    def train_step(state: TrainState, batch: dict, step):
        key = step_key(seed, step)
        params, opt_state, buffers = dict(state.params), dict(state.opt_state), state.buffers
        metrics, finite, loss = {}, jnp.bool_(True), jnp.float32(0)
        for i, phase in enumerate(phases):
            if phase.takes_step:
                phase = dataclasses.replace(phase, loss=functools.partial(phase.loss, step=step))
            loss, aux, weight, grads = phase_gradients(
                phase, graphdefs, params, batch, jax.random.fold_in(key, i), k, buffers
            )
            buffers = aux.pop(BUFFERS, buffers)
            grad_norm = optax.global_norm(grads)
            updates, opt_state[phase.player] = txs[phase.player].update(
                grads, opt_state[phase.player], params[phase.player]
            )
            params[phase.player] = optax.apply_updates(params[phase.player], updates)
            finite &= jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            prefix = f"{phase.player}/" if several else ""
            metrics |= {f"{prefix}{name}": v for name, v in aux.items()}
            metrics |= {f"{prefix}loss": loss, f"{prefix}grad_norm": grad_norm, f"{prefix}weight": weight}
        accept = finite if t.skip_nonfinite else jnp.bool_(True)
        if t.spike_factor > 0:
            spike = (state.accepted >= t.spike_warmup) & (loss > t.spike_factor * state.loss_ema)
            accept &= ~spike
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
        ema = jnp.where(state.accepted == 0, loss, EMA * state.loss_ema + (1 - EMA) * loss)
        new = TrainState(
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            skipped=state.skipped + (~accept).astype(jnp.int32),
            accepted=state.accepted + accept.astype(jnp.int32),
            loss_ema=jnp.where(accept, ema, state.loss_ema),
            buffers=keep(buffers, state.buffers),
        )
        if several:
            metrics["loss"] = loss  # the last phase's
        metrics |= {"skipped_steps": new.skipped.astype(jnp.float32), "skipped": (~accept).astype(jnp.float32)}
        return new, metrics

    return train_step


def make_eval_step(family, config, graphdefs: dict):
    """``eval_step(params, batch, index, buffers=None) -> (scalars, utterances)`` with the family's eval loss
    (train=False; the buffers it may return are dropped: eval changes no state)."""
    loss_fn = family.eval_loss(config)
    seed = int(config.seed)

    def eval_step(params: dict, batch: dict, index, buffers: dict | None = None):
        loss, aux, _ = call_loss(loss_fn, merged(graphdefs, params), batch, eval_key(seed, index), False, buffers)
        utts = jnp.sum(batch["valid"].astype(jnp.float32)) if "valid" in batch else jnp.float32(1)
        return {"loss": jnp.asarray(loss, jnp.float32), **_scalars(aux)}, utts

    return eval_step
