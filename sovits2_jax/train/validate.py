"""Config validation, in one order for every config: the mesh and sharding sections, then the data task's section,
then the family's own sections (``Family.validate``, which checks its model section). Each step names the bad key."""

from __future__ import annotations

from sovits2_jax.data import pipeline
from sovits2_jax.parallel import mesh, rules
from sovits2_jax.train import family as family_lib


def validate(config, num_devices: int | None = None) -> None:
    """Rejects inconsistent values with a ConfigError naming the key (``num_devices``: the mesh's, default all)."""
    shape = mesh.validate_mesh(config.mesh, num_devices) if "mesh" in config else None
    if "sharding" in config:
        rules.validate_rules(config.sharding.rules)
    if "data" in config:
        pipeline.validate(config.data)
    if "family" in config:
        family_lib.get(config.family).validate(config)
    if shape is not None:
        mesh.validate_batch_sizes(config, shape)
