"""Host-local numpy batches -> global ``jax.Array``s sharded over the mesh's batch axes."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str], ndim: int) -> NamedSharding:
    """Leading dimension over ``batch_axes`` (e.g. ("data", "fsdp")), the rest replicated."""
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    unknown = [a for a in batch_axes if a not in mesh.axis_names]
    if unknown:
        raise ValueError(f"data.batch_axes names {unknown}, not axes of the mesh {mesh.axis_names}")
    lead = axes[0] if len(axes) == 1 else (axes or None)
    return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, batch_axes: Sequence[str]) -> dict[str, jax.Array]:
    """Each process passes its local rows; the global batch is their concatenation in process order."""
    ways = 1
    for a in batch_axes:
        ways *= mesh.shape[a]
    local_ways = max(ways // jax.process_count(), 1)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ValueError(f"batch[{key!r}] is a scalar; every batch entry needs a leading batch dimension")
        if value.shape[0] % local_ways:
            raise ValueError(
                f"batch[{key!r}] has {value.shape[0]} local rows, not divisible by the {local_ways} local shards of "
                f"mesh axes {tuple(batch_axes)}; set data.batch_multiple to a multiple of {local_ways}"
            )
        sharding = batch_sharding(mesh, batch_axes, value.ndim)
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


def prefetch(batches: Iterable, size: int = 2) -> Iterator:
    """Keeps ``size`` batches ahead: their host-to-device copies (dispatched asynchronously) overlap the step."""
    queue = collections.deque()
    for item in batches:
        queue.append(item)
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
