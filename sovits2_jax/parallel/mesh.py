"""Builds the (data, fsdp, tensor) device mesh from a config."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from sovits2_jax.validation import ConfigError, check

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes for MESH_AXES from ``axes`` (-1 fills the remaining devices); raises naming the bad key."""
    unknown = set(axes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh.{sorted(unknown)[0]}: unknown mesh axis (expected {', '.join(MESH_AXES)})")
    sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
    fill = [name for name, s in zip(MESH_AXES, sizes) if s == -1]
    for name, s in zip(MESH_AXES, sizes):
        if s == 0 or s < -1:
            raise ValueError(f"mesh.{name}={s}: axis sizes must be positive or -1 (fill)")
    if len(fill) > 1:
        raise ValueError(f"mesh.{fill[1]}: only one mesh axis may be -1 (also mesh.{fill[0]})")
    fixed = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"mesh.{fill[0]}=-1: {num_devices} devices are not divisible by the other axes ({fixed})"
            )
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh: data*fsdp*tensor = {fixed} does not match the {num_devices} available devices "
            f"(set one of mesh.data/mesh.fsdp/mesh.tensor to -1 to fill)"
        )
    return tuple(sizes)


def validate_mesh(mesh, num_devices: int | None = None) -> tuple[int, ...]:
    """Checks a config's mesh section against the device count (default: all); the shape, or a ConfigError."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    try:
        return resolve_mesh_shape(dict(mesh), num_devices)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None


def needed_batch_multiple(config, shape: tuple[int, ...]) -> int:
    """The smallest ``config.data.batch_multiple`` that the mesh ``shape``, the process count and
    ``config.train.accum_steps`` allow: each process's rows (batch_multiple x its data shards) then split evenly over
    its data-parallel devices and the accumulation microbatches."""
    processes = jax.process_count()
    local_ways = max(1, shape[0] * shape[1] // processes)
    accum = config.train.get("accum_steps", 1) if "train" in config else 1
    shards_per_process = max(1, (config.data.get("num_shards", 0) or processes) // processes)
    need = local_ways * accum
    return need // math.gcd(need, shards_per_process)


def resolve_batch_multiple(config, shape: tuple[int, ...]) -> None:
    """``config.data.batch_multiple = 0`` (the default: "what the mesh needs") -> ``needed_batch_multiple``."""
    if "data" in config and config.data.get("batch_multiple", 1) == 0:
        config.data.batch_multiple = needed_batch_multiple(config, shape)


def validate_batch_sizes(config, shape: tuple[int, ...]) -> None:
    """Batch sizes against the resolved mesh: config.train.batch_size over data*fsdp, config.data.batch_multiple
    over the data-parallel devices of one process."""
    data_ways = shape[0] * shape[1]
    if "data" in config:
        local_ways = max(1, data_ways // jax.process_count())
        shards = config.data.get("num_shards", 0) or jax.process_count()
        check(
            shards % jax.process_count() == 0,
            f"config.data.num_shards={shards} is not a multiple of the {jax.process_count()} processes",
        )
        local_multiple = config.data.batch_multiple * (shards // jax.process_count())  # a process's shards' rows
        check(
            local_multiple % local_ways == 0,
            f"config.data.batch_multiple={config.data.batch_multiple} x {shards // jax.process_count()} data "
            f"shards per process is not a multiple of the {local_ways} data-parallel devices per process "
            f"(mesh data*fsdp / processes); config.data.batch_multiple={needed_batch_multiple(config, shape)} (or 0, "
            "the default: what the mesh needs) would do",
        )
    if "train" in config and "batch_size" in config.train:
        check(
            config.train.batch_size % data_ways == 0,
            f"config.train.batch_size={config.train.batch_size} is not divisible by mesh data*fsdp={data_ways}",
        )


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices`` (default: all) with Auto axis types (GSPMD propagation)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(axes, len(devices))
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
