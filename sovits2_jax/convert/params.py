"""Turning flat converted arrays into a model's (graphdef, params), optionally placed on a mesh."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx

from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten
from sovits2_jax.parallel.sharding import split_params


def params_from_flat(
    make_model: Callable[[], nnx.Module],
    flat: Mapping[str, np.ndarray],
    shardings: nnx.State | None = None,
) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) for ``make_model()`` filled with ``flat`` (cast to the model's param dtypes).

    With ``shardings`` (from ``param_shardings``) each array is placed directly on its devices.
    """
    graphdef, abstract = split_params(nnx.eval_shape(make_model))
    target = flatten(nnx.to_pure_dict(abstract))
    missing = sorted(set(target) - set(flat))
    extra = sorted(set(flat) - set(target))
    shape_errors = [
        f"{k} {tuple(np.shape(flat[k]))} != {tuple(target[k].shape)}"
        for k in target
        if k in flat and tuple(np.shape(flat[k])) != tuple(target[k].shape)
    ]
    if missing or extra or shape_errors:
        raise ConversionError(
            f"parameters do not fit the model: missing {missing}, unexpected {extra}, mis-shaped {shape_errors}"
        )
    flat_shardings = flatten(nnx.to_pure_dict(shardings)) if shardings is not None else {}
    placed = {}
    for k, spec in target.items():
        value = np.asarray(flat[k]).astype(spec.dtype, copy=False)
        placed[k] = (
            jax.device_put(value, flat_shardings.get(k)) if flat_shardings else jax.numpy.asarray(value)
        )
    nnx.replace_by_pure_dict(abstract, unflatten(placed))
    return graphdef, abstract


def params_to_flat(params: nnx.State) -> dict[str, np.ndarray]:
    """Our params as {dotted path: numpy array} (gathered to the host)."""
    return {k: np.asarray(jax.device_get(v)) for k, v in flatten(nnx.to_pure_dict(params)).items()}
