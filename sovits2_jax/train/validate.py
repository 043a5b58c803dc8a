"""Config validation, in one order for every config: the mesh and sharding sections, then the data task's section,
then the trainer's sections (``train``, ``init``), then the family's own sections (``Family.validate``, which checks
its model section). Each step names the bad key."""

from __future__ import annotations

from sovits2_jax.data import pipeline
from sovits2_jax.parallel import mesh, rules
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import optim
from sovits2_jax.train.callbacks import profile_steps
from sovits2_jax.validation import check


def validate(config, num_devices: int | None = None) -> None:
    """Rejects inconsistent values with a ConfigError naming the key (``num_devices``: the mesh's, default all)."""
    shape = mesh.validate_mesh(config.mesh, num_devices) if "mesh" in config else None
    if "sharding" in config:
        rules.validate_rules(config.sharding.rules)
    if shape is not None:
        mesh.resolve_batch_multiple(config, shape)
    if "data" in config:
        pipeline.validate(config.data)
    if "train" in config:
        trainer_sections(config)
    if "family" in config:
        family_lib.get(config.family).validate(config)
    if shape is not None:
        mesh.validate_batch_sizes(config, shape)


def adopt_init(config, overrides=()):
    """``config`` with ``config.model``'s architecture from ``config.init.path`` (see train/init_architecture.py),
    then the keys the family's inputs decide (``Family.adopt``); ``overrides``: the command line's dotted keys,
    refused where they contradict the checkpoint or the inputs."""
    from sovits2_jax.train import init_architecture

    init_architecture.adopt(config, overrides)
    if "family" in config:
        family_lib.get(config.family).adopt(config, overrides)
    return config


def trainer_sections(config) -> None:
    """The trainer's own sections: ``train`` (loop cadence, dtype, profiling) and ``init``."""
    for key in ("family", "train", "init"):
        check(key in config, f"config.{key} is missing (configs.common.training_sections builds it)")
    t = config.train
    for key in ("num_steps", "log_every", "checkpoint_every", "keep_last", "accum_steps"):
        check(t[key] >= 1, f"config.train.{key}={t[key]} must be >= 1")
    for key in ("eval_every", "eval_batches", "keep_best", "spike_factor", "prefetch"):
        check(t[key] >= 0, f"config.train.{key}={t[key]} must be >= 0")
    check(t.dtype in ("float32", "bfloat16"), f"config.train.dtype={t.dtype!r} not in ('float32', 'bfloat16')")
    for key in ("optimizer", "optimizer_d"):  # before any data or model is built
        if key in t:
            optim.validate(t[key], f"config.train.{key}")
    profile_steps(config)
