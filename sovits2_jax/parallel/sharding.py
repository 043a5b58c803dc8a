"""Logical axis names -> mesh axes, sharded parameter creation and activation constraints.

Parameters carry ``logical_axes`` metadata; an ordered rules table (from the config) maps each logical name to
mesh axes. The first rule whose mesh axes are unused in the same spec and divide the dimension wins; a logical name
without a fitting rule is replicated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | Sequence[str] | None]]

_active_rules: list[Rules] = []


def _as_tuple(mesh_axes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def logical_to_spec(
    logical_axes: Sequence[str | None], rules: Rules, shape: Sequence[int] | None = None, mesh=None
) -> PartitionSpec:
    """PartitionSpec for one array; with ``shape`` and ``mesh`` a rule is used only if its axes divide the dim."""
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(logical_axes):
        choice = None
        for rule_name, mesh_axes in rules:
            if rule_name != name:
                continue
            axes = _as_tuple(mesh_axes)
            if not axes or used & set(axes):
                continue
            if shape is not None and mesh is not None:
                size = math.prod(mesh.shape[a] for a in axes)
                if shape[dim] % size:
                    continue
            choice = axes
            break
        if choice:
            used.update(choice)
            spec.append(choice[0] if len(choice) == 1 else choice)
        else:
            spec.append(None)
    return PartitionSpec(*spec)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _logical_axes(variable: nnx.Variable) -> tuple:
    axes = variable.get_metadata().get("logical_axes")
    return tuple(axes) if axes is not None else (None,) * variable.shape.__len__()


def param_shardings(params: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
    """A State of NamedShardings, one per parameter, from its logical axes."""

    def one(v):
        return NamedSharding(mesh, logical_to_spec(_logical_axes(v), rules, v.shape, mesh))

    return jax.tree.map(one, params, is_leaf=_is_variable)


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a model that holds nothing but ``nnx.Param`` state."""
    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)
    leftovers = [path for r in rest for path, _ in nnx.to_flat_state(r)]
    if leftovers:
        raise ValueError(
            f"model holds non-Param state at {leftovers[:5]}; keep constants out of the module state"
        )
    return graphdef, params


def sharded_init(
    make_model: Callable[[], nnx.Module], mesh: Mesh, rules: Rules
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """Creates the model's parameters directly sharded (jit with out_shardings): never whole on one device.

    Returns (graphdef, params, shardings).
    """
    abstract = nnx.eval_shape(make_model)
    graphdef, abstract_params = split_params(abstract)
    shardings = param_shardings(abstract_params, mesh, rules)

    def init():
        return split_params(make_model())[1]

    with jax.set_mesh(mesh):
        params = jax.jit(init, out_shardings=shardings)()
    return graphdef, params, shardings


@contextlib.contextmanager
def activation_rules(rules: Rules) -> Iterator[None]:
    """Makes ``constrain`` use ``rules`` (together with the mesh set by ``jax.set_mesh``)."""
    _active_rules.append(tuple(rules))
    try:
        yield
    finally:
        _active_rules.pop()


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; a no-op without a mesh or active rules."""
    mesh = jax.sharding.get_abstract_mesh()
    if not _active_rules or mesh is None or mesh.empty:
        return x
    spec = logical_to_spec(logical_axes, _active_rules[-1], x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def describe(params: nnx.State, print_fn: Callable[[str], None] = print) -> list[dict]:
    """Prints (and returns) each parameter's path, shape, dtype, logical axes, spec and per-device shard shape."""
    rows = []
    for path, v in nnx.to_flat_state(params):
        value = v[...] if _is_variable(v) else v
        sharding = getattr(value, "sharding", None)
        spec = getattr(sharding, "spec", None)
        shard = sharding.shard_shape(value.shape) if sharding is not None else value.shape
        rows.append(
            dict(
                path=".".join(map(str, path)),
                shape=tuple(value.shape),
                dtype=str(value.dtype),
                logical_axes=_logical_axes(v) if _is_variable(v) else None,
                spec=str(spec),
                shard_shape=tuple(shard),
            )
        )
    width = max((len(r["path"]) for r in rows), default=10)
    total = sum(int(np.prod(r["shape"])) for r in rows)
    for r in rows:
        print_fn(
            f"{r['path']:<{width}}  {r['dtype']:<8} {r['shape']!s:<20} {r['spec']:<32} shard {r['shard_shape']}"
        )
    print_fn(f"{len(rows)} parameters, {total:,} values")
    return rows
