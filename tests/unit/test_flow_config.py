"""The flow family's configs (configs/cosyvoice2.py:flow[_SIZE], presets in configs/flow.py): each size loads,
validates and converts to its FlowConfig preset."""

import dataclasses

import pytest

from sovits2_jax.configs.flow import named_config
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.train.validate import validate
from sovits2_jax.validation import load_config


@pytest.mark.parametrize("arg,size", [("flow", "real"), ("flow_small", "small"), ("flow_tiny", "tiny")])
def test_flow_config_loads(arg, size):
    config = load_config(f"configs/cosyvoice2.py:{arg}")
    validate(config, num_devices=8)
    want = named_config(size)
    if size == "tiny":  # the tiny training config reads the recipe's 6561 S3 tokens and 192-d x-vectors
        want = dataclasses.replace(want, vocab_size=6561, spk_embed_dim=192)
    assert FlowConfig.from_dict(config.model.to_dict()) == want


def test_real_config_is_cosyvoice2():
    cfg = FlowConfig.from_dict(load_config("configs/cosyvoice2.py:flow").model.to_dict())
    assert (cfg.encoder.output_size, cfg.encoder.num_blocks, cfg.encoder.static_chunk_size) == (512, 6, 25)
    assert (cfg.estimator.channels, cfg.estimator.num_mid_blocks, cfg.estimator.static_chunk_size) == ((256,), 12, 50)
    assert cfg.cfm.inference_cfg_rate == 0.7 and cfg.vocab_size == 6561


def test_bad_values_name_the_key():
    config = load_config("configs/cosyvoice2.py:flow_tiny").model.to_dict()
    config["estimator"]["channels"] = [64, 64]
    with pytest.raises(ValueError, match=r"estimator\.channels"):
        FlowConfig.from_dict(config)
