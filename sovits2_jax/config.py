"""Config loading and validation for ml_collections configs (``configs/*.py`` with ``get_config(arg)``).

``validate`` only dispatches: each section is checked by the module that owns it (mesh and sharding rules:
``parallel``; model sections: their model modules; sampling: ``infer.sampling``; data: ``data.pipeline``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from sovits2_jax.validation import ConfigError

__all__ = ["ConfigError", "load_config", "validate"]


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``path/to/file.py[:arg]`` -> the file's ``get_config(arg)`` (what absl's config_flags does, for scripts)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or not Path(path).is_file():
        raise ConfigError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def validate(config, num_devices: int | None = None) -> None:
    """Rejects inconsistent values with a ConfigError naming the key."""
    from sovits2_jax.parallel import mesh, rules

    shape = mesh.validate_mesh(config.mesh, num_devices) if "mesh" in config else None
    if "sharding" in config:
        rules.validate_rules(config.sharding.rules)
    model_type = config.get("model_type", "qwen2")
    part = config.get("part")
    if "model" in config and model_type == "qwen2":
        from sovits2_jax.models import qwen2

        qwen2.validate(config.model)
    if part in ("llm", "ar"):  # speech LMs (CosyVoice2 Qwen2LM, GPT-SoVITS2 AR) on a Qwen2 backbone
        from sovits2_jax.infer import sampling
        from sovits2_jax.models import speech_lm

        speech_lm.validate(config[part].model, prefix=f"config.{part}.model")
        if "sampling" in config[part]:
            sampling.validate(config[part].sampling, prefix=f"config.{part}.sampling")
    if part == "flow" or model_type == "flow":
        from sovits2_jax.models.flow import config as flow_config

        if part == "flow":
            flow_config.validate(config.flow.model, prefix="config.flow.model")
        else:
            flow_config.validate(config.model)
    if part == "hift":
        from sovits2_jax.models import hift

        hift.validate(config.hift.model)
    if model_type == "vits2":
        from sovits2_jax.models.vits2 import config as vits_config

        vits_config.validate(config.vits.model)
    if "data" in config:
        from sovits2_jax.data import pipeline

        pipeline.validate(config.data)
    if shape is not None:
        mesh.validate_batch_sizes(config, shape)
