"""``init.path`` decides the architecture (sovits2_jax/train/init_architecture.py): a preset whose sizes differ from
a CosyVoice2 model directory (the tiny random one, written by the reference code) takes the directory's, the
weights then fill the model the config builds, and a command-line override that contradicts the directory is
refused naming the key (show_config and the trainer's command share the step)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sovits2_jax.validation import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _yaml_config(model_dir: Path, part: str):
    """The part's architecture as the directory's yaml gives it, read by the yaml reader."""
    from sovits2_jax.convert import cosyvoice2

    return cosyvoice2.part_modules()[part].config_from_yaml(cosyvoice2.read_yaml(model_dir))


@pytest.mark.parametrize("part", ["flow", "hift", "llm"])
def test_a_release_directory_gives_the_architecture_and_its_weights_fit(tiny_cosyvoice2_dir, part):
    from sovits2_jax.convert import parts
    from sovits2_jax.train import family as family_lib
    from sovits2_jax.train.validate import adopt_init, validate

    config = load_config(f"configs/cosyvoice2.py:{part}_small")  # sizes unlike the tiny directory's
    config.init.path = str(tiny_cosyvoice2_dir)
    theirs = _yaml_config(tiny_cosyvoice2_dir, part)
    family = family_lib.get(config.family)
    loaded = jax.tree.map(np.shape, parts.load(tiny_cosyvoice2_dir, part)[0])
    assert _param_shapes(part, _model_config(family, config)) != loaded  # the preset alone does not fit

    validate(adopt_init(config))
    adopted = _model_config(family, config)
    if part == "llm":
        assert adopted.backbone.num_layers == theirs.backbone.num_layers
        assert adopted.backbone.hidden_size == theirs.backbone.hidden_size
    else:
        assert adopted.to_dict() == {**theirs.to_dict(), **_runtime(adopted)}
    assert _param_shapes(part, adopted) == loaded


def _param_shapes(part: str, model_config):
    """The parameter shapes of the model ``model_config`` builds (abstractly: nothing is initialised)."""
    from flax import nnx

    from sovits2_jax.convert import parts

    model = nnx.eval_shape(lambda: parts.build_module(part, model_config))
    return jax.tree.map(np.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _model_config(family, config):
    """The family's model config of ``config`` (a method of some families, a module function of others)."""
    method = getattr(family, "model_config", None)
    return method(config) if method else sys.modules[type(family).__module__].model_config(config)


def _runtime(config) -> dict:
    from sovits2_jax.convert.cosyvoice2_yaml import RUNTIME_FIELDS

    return {k: v for k, v in config.to_dict().items() if k in RUNTIME_FIELDS}


def test_a_contradicting_override_is_refused_and_an_agreeing_one_kept(tiny_cosyvoice2_dir):
    from sovits2_jax.train.validate import adopt_init

    blocks = _yaml_config(tiny_cosyvoice2_dir, "flow").encoder.num_blocks
    config = load_config("configs/cosyvoice2.py:flow_small")
    config.init.path = str(tiny_cosyvoice2_dir)
    config.model.encoder.num_blocks = blocks + 2
    with pytest.raises(ConfigError, match=rf"--config.model.encoder.num_blocks={blocks + 2} contradicts"):
        adopt_init(config, {"model.encoder.num_blocks": blocks + 2})
    config.model.encoder.num_blocks = blocks
    adopt_init(config, {"model.encoder.num_blocks": blocks})  # the same value: no contradiction

    cmd = [sys.executable, "-m", "sovits2_jax.show_config", "--config=configs/cosyvoice2.py:flow_small",
           f"--config.init.path={tiny_cosyvoice2_dir}", f"--config.model.encoder.num_blocks={blocks + 2}"]  # fmt: skip
    refused = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: --config.model.encoder.num_blocks={blocks + 2} contradicts config.init.path="
    )
