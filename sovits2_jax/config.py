"""Config loading and validation for ml_collections configs (``configs/*.py`` with ``get_config(arg)``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from sovits2_jax.parallel.mesh import MESH_AXES, resolve_mesh_shape
from sovits2_jax.validation import ConfigError, check

DTYPES = ("float32", "bfloat16", "float16")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``path/to/file.py[:arg]`` -> the file's ``get_config(arg)`` (what absl's config_flags does, for scripts)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or not Path(path).is_file():
        raise ConfigError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def validate_qwen2(m, prefix: str = "config.model") -> None:
    """Checks a Qwen2 model section (heads, dims, switches)."""
    for key in ("hidden_size", "num_heads", "num_kv_heads", "num_layers", "vocab_size", "intermediate_size"):
        check(int(m[key]) > 0, f"{prefix}.{key}={m[key]} must be positive")
    head_dim = m.get("head_dim") or 0
    if not head_dim:
        check(
            m.hidden_size % m.num_heads == 0,
            f"{prefix}.num_heads={m.num_heads} does not divide {prefix}.hidden_size={m.hidden_size}",
        )
        head_dim = m.hidden_size // m.num_heads
    check(head_dim % 2 == 0, f"{prefix}.head_dim={head_dim} must be even for rotary embeddings")
    check(
        m.num_heads % m.num_kv_heads == 0,
        f"{prefix}.num_kv_heads={m.num_kv_heads} does not divide {prefix}.num_heads={m.num_heads}",
    )
    from sovits2_jax.models.qwen2 import REMAT_POLICIES
    from sovits2_jax.nn.attention import IMPLEMENTATIONS

    check(
        m.remat_policy in REMAT_POLICIES,
        f"{prefix}.remat_policy={m.remat_policy!r} not in {sorted(REMAT_POLICIES)}",
    )
    check(
        m.get("attention_impl") in IMPLEMENTATIONS,
        f"{prefix}.attention_impl={m.get('attention_impl')!r} not in {IMPLEMENTATIONS}",
    )
    for key in ("dtype", "param_dtype"):
        check(m[key] in DTYPES, f"{prefix}.{key}={m[key]!r} not in {DTYPES}")
    check(m.rope_theta > 0, f"{prefix}.rope_theta={m.rope_theta} must be positive")


def validate_mesh(config, num_devices: int | None = None) -> tuple[int, ...]:
    """Checks config.mesh against the device count and config.sharding.rules against the mesh axes."""
    import jax

    num_devices = jax.device_count() if num_devices is None else num_devices
    try:
        shape = resolve_mesh_shape(dict(config.mesh), num_devices)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    for i, rule in enumerate(config.sharding.rules):
        check(len(rule) == 2, f"config.sharding.rules[{i}]={rule!r} must be (logical_name, mesh_axes)")
        axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        for a in axes:
            check(a is None or a in MESH_AXES, f"config.sharding.rules[{i}]: unknown mesh axis {a!r}")
    return shape


def validate(config, num_devices: int | None = None) -> None:
    """Rejects inconsistent values with a ConfigError naming the key."""
    shape = validate_mesh(config, num_devices) if "mesh" in config else None
    model_type = config.get("model_type", "qwen2")
    if "model" in config and model_type == "qwen2":
        validate_qwen2(config.model)
    # speech LMs (CosyVoice2 Qwen2LM, GPT-SoVITS2 AR) sit on a Qwen2 backbone
    part = config.get("part")
    if part in ("llm", "ar") and "backbone" in config[part].model:
        validate_qwen2(config[part].model.backbone, prefix=f"config.{part}.model.backbone")
    flow_model = config.flow.model if part == "flow" else config.model if model_type == "flow" else None
    if flow_model is not None:
        from sovits2_jax.models.flow.config import FlowConfig

        where = "config.flow.model" if part == "flow" else "config.model"
        try:
            FlowConfig.from_dict(flow_model.to_dict())
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{where}: {e}") from None
    if part == "hift":
        from sovits2_jax.models.hift import HiFTConfig

        try:
            HiFTConfig.from_dict(config.hift.model.to_dict())
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config.hift.model: {e}") from None
    if "data" in config:
        from sovits2_jax.data import pipeline

        pipeline.validate(config.data)
        if shape is not None:
            import jax

            local_ways = max(1, shape[0] * shape[1] // jax.process_count())
            check(
                config.data.batch_multiple % local_ways == 0,
                f"config.data.batch_multiple={config.data.batch_multiple} is not a multiple of the "
                f"{local_ways} data-parallel devices per process (mesh data*fsdp / processes)",
            )
    if "train" in config and shape is not None and "batch_size" in config.train:
        data_ways = shape[0] * shape[1]
        check(
            config.train.batch_size % data_ways == 0,
            f"config.train.batch_size={config.train.batch_size} is not divisible by mesh data*fsdp={data_ways}",
        )
