"""The training state on the mesh: every player's params (pure dicts, fp32), optimizer states, step counters and
the family's buffers (non-gradient state such as EMA codebooks, ``Family.init_buffers``; ``{}`` for most families).

``build`` creates each player's params directly sharded (``parallel.sharding.sharded_init``), its optimizer from
its section and the optimizer state sharded like the params (GSPMD places Adam's moments with their params).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from sovits2_jax.parallel.sharding import sharded_init
from sovits2_jax.train import optim
from sovits2_jax.validation import ConfigError


@dataclasses.dataclass
class TrainState:
    params: dict  # {player: nnx pure dict}
    opt_state: dict  # {player: optax state} for players with an optimizer
    skipped: jax.Array  # int32: steps skipped (non-finite or spike)
    accepted: jax.Array  # int32: optimizer updates applied
    loss_ema: jax.Array  # float32: running mean of accepted losses (spike detection)
    buffers: dict = dataclasses.field(default_factory=dict)  # {player: tree}: non-gradient state


jax.tree_util.register_dataclass(
    TrainState, data_fields=["params", "opt_state", "skipped", "accepted", "loss_ema", "buffers"], meta_fields=[]
)


@dataclasses.dataclass
class Built:
    """What ``build`` returns: the modules' graphdefs, optimizers, lr schedules, the state and its shardings."""

    graphdefs: dict[str, nnx.GraphDef]
    txs: dict[str, optax.GradientTransformation]
    schedules: dict[str, optax.Schedule]
    state: TrainState
    shardings: TrainState


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _named(sharding, mesh) -> NamedSharding:
    return sharding if isinstance(sharding, NamedSharding) else replicated(mesh)


def shardings_of(tree, mesh):
    """The NamedShardings of a tree of arrays (anything else, e.g. a single-device scalar, replicated)."""
    return jax.tree.map(lambda x: _named(x.sharding, mesh), tree)


def init_optimizers(players, txs, params, mesh) -> dict:
    with jax.set_mesh(mesh):
        return {p.name: jax.jit(txs[p.name].init)(params[p.name]) for p in players if p.name in txs}


def place(tree, like):
    """Host or device arrays -> arrays with the dtypes and shardings of ``like`` (``init.path`` weights)."""
    return jax.tree.map(lambda x, ref: jax.device_put(np.asarray(x, ref.dtype), ref.sharding), tree, like)


def check_same_layout(new, old, what: str) -> None:
    """Raises a ConfigError naming the first path where ``new`` differs from ``old`` in structure, shape or dtype."""
    new_flat = dict(jax.tree_util.tree_flatten_with_path(new)[0])
    old_flat = dict(jax.tree_util.tree_flatten_with_path(old)[0])
    if new_flat.keys() != old_flat.keys():
        missing = sorted(map(jax.tree_util.keystr, old_flat.keys() - new_flat.keys()))
        extra = sorted(map(jax.tree_util.keystr, new_flat.keys() - old_flat.keys()))
        raise ConfigError(f"{what}: parameter tree differs (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, value in new_flat.items():
        ref = old_flat[key]
        if tuple(np.shape(value)) != tuple(ref.shape):
            raise ConfigError(f"{what}: {jax.tree_util.keystr(key)} has shape {np.shape(value)}, model {ref.shape}")


def build(family, config, mesh, init_params=None, init_buffers=None) -> Built:
    """Players' params (``init_params(params) -> params`` may replace them: init.path), optimizers and state, with
    the family's buffers (``init_buffers(buffers) -> buffers`` may replace them)."""
    players = family.players(config)
    rules = config.sharding.rules
    graphdefs, params = {}, {}
    for p in players:
        graphdef, state, _ = sharded_init(p.make_model, mesh, rules)
        graphdefs[p.name] = graphdef
        params[p.name] = nnx.to_pure_dict(state)
    if init_params is not None:
        new = init_params(params)
        check_same_layout(new, params, f"config.init.path={config.init.path!r}")
        params = place(new, params)
    buffers = family.init_buffers(config, mesh)
    if init_buffers is not None and buffers:
        new = init_buffers(buffers)
        check_same_layout(new, buffers, f"config.init.path={config.init.path!r} (buffers)")
        buffers = place(new, buffers)
    return from_params(players, config, mesh, graphdefs, params, buffers)


def from_params(players, config, mesh, graphdefs: dict, params: dict, buffers: dict | None = None) -> Built:
    """The rest of ``build`` for params already on the mesh: each player's optimizer (from its section), the
    optimizer state and the zeroed counters (``buffers``: the family's, already on the mesh). For a caller that has
    its params without a random init to replace."""
    txs, schedules = {}, {}
    for p in players:
        if p.optimizer is not None:
            txs[p.name], schedules[p.name] = optim.make_optimizer(
                p.optimizer, config.train.num_steps, p.param_labels, params[p.name]
            )
    opt_state = init_optimizers(players, txs, params, mesh)
    rep = replicated(mesh)
    state = TrainState(
        params=params,
        opt_state=opt_state,
        skipped=jax.device_put(jnp.int32(0), rep),
        accepted=jax.device_put(jnp.int32(0), rep),
        loss_ema=jax.device_put(jnp.float32(0), rep),
        buffers=dict(buffers or {}),
    )
    return Built(graphdefs, txs, schedules, state, shardings_of(state, mesh))


def counters(state: TrainState) -> dict[str, Any]:
    """The host-side JSON counters of a state (for train_state.json)."""
    return dict(skipped_steps=int(state.skipped), accepted_steps=int(state.accepted), loss_ema=float(state.loss_ema))


def with_counters(state: TrainState, saved: dict, mesh) -> TrainState:
    rep = replicated(mesh)
    return dataclasses.replace(
        state,
        skipped=jax.device_put(jnp.int32(saved["skipped_steps"]), rep),
        accepted=jax.device_put(jnp.int32(saved["accepted_steps"]), rep),
        loss_ema=jax.device_put(jnp.float32(saved["loss_ema"]), rep),
    )
