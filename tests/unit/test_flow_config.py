"""configs/flow.py: both sizes load, validate and convert to FlowConfig."""

import pytest

from configs.flow import named_config
from sovits2_jax.models.flow.config import FlowConfig
from sovits2_jax.train.validate import validate
from sovits2_jax.validation import load_config


@pytest.mark.parametrize("size", ["real", "tiny"])
def test_flow_config_loads(size):
    config = load_config(f"configs/flow.py:{size}")
    validate(config, num_devices=8)
    assert FlowConfig.from_dict(config.model.to_dict()) == named_config(size)


def test_real_config_is_cosyvoice2():
    cfg = FlowConfig.from_dict(load_config("configs/flow.py:real").model.to_dict())
    assert (cfg.encoder.output_size, cfg.encoder.num_blocks, cfg.encoder.static_chunk_size) == (512, 6, 25)
    assert (cfg.estimator.channels, cfg.estimator.num_mid_blocks, cfg.estimator.static_chunk_size) == ((256,), 12, 50)
    assert cfg.cfm.inference_cfg_rate == 0.7 and cfg.vocab_size == 6561


def test_bad_values_name_the_key():
    config = load_config("configs/flow.py:tiny").model.to_dict()
    config["estimator"]["channels"] = [64, 64]
    with pytest.raises(ValueError, match=r"estimator\.channels"):
        FlowConfig.from_dict(config)
