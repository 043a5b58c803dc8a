"""flow.pt <-> our flow parameters: bit-exact round trip, strict key errors, yaml config."""

from __future__ import annotations

import numpy as np
import pytest

from sovits2_jax.convert import cosyvoice2_flow
from sovits2_jax.convert.mapping import ConversionError
from sovits2_jax.models.flow.config import FlowConfig, tiny_config

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def flow_pt(tmp_path_factory):
    import torch

    from sovits2_jax.convert.parity_flow import build_reference

    state = build_reference(tiny_config(), seed=1).state_dict()
    path = tmp_path_factory.mktemp("flow") / "flow.pt"
    torch.save({**state, "epoch": 3, "step": 1200}, path)  # a training checkpoint carries these
    return path, {k: v.numpy() for k, v in state.items()}


def _items(path):
    from sovits2_jax.convert.torch_io import iter_torch_file

    return list(iter_torch_file(path))


def test_round_trip_is_bit_exact(flow_pt):
    path, state = flow_pt
    cfg = tiny_config()
    params = cosyvoice2_flow.torch_to_params(_items(path), cfg)
    assert params["encoder"]["blocks"][0]["attn"]["pos_bias_u"].shape == (8, 64)
    # torch Linear [out, in] is stored transposed; Conv1d [out, in, k] as [k, in, out]
    np.testing.assert_array_equal(params["encoder_proj"]["kernel"], state["encoder_proj.weight"].T)
    np.testing.assert_array_equal(
        params["estimator"]["mid"][1]["resnet"]["block1"]["conv"]["conv"]["kernel"],
        state["decoder.estimator.mid_blocks.1.0.block1.block.0.weight"].transpose(2, 1, 0),
    )
    back = dict(cosyvoice2_flow.params_to_torch(params, cfg))
    assert set(back) == set(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert np.array_equal(back[key], value), key


def test_strict_key_errors_name_every_problem(flow_pt):
    path, _ = flow_pt
    items = [(k, v) for k, v in _items(path) if k != "decoder.estimator.up_blocks.0.1.0.attn1.to_k.weight"]
    items.append(("decoder.estimator.extra.weight", np.zeros(3, np.float32)))
    items = [(k, v[:-1] if k == "encoder.after_norm.bias" else v) for k, v in items]
    with pytest.raises(ConversionError) as err:
        cosyvoice2_flow.torch_to_params(items, tiny_config())
    message = str(err.value)
    assert "decoder.estimator.up_blocks.0.1.0.attn1.to_k.weight" in message
    assert "decoder.estimator.extra.weight" in message
    assert "encoder.after_norm.bias" in message


def test_wrong_size_config_is_rejected(flow_pt):
    path, _ = flow_pt
    with pytest.raises(ConversionError, match="mis-shaped"):
        cosyvoice2_flow.torch_to_params(_items(path), FlowConfig())


def test_config_from_yaml_sections():
    yaml = {
        "flow": {
            "input_size": 512,
            "output_size": 80,
            "spk_embed_dim": 192,
            "vocab_size": 6561,
            "token_mel_ratio": 2,
            "pre_lookahead_len": 3,
            "encoder": {
                "output_size": 512,
                "attention_heads": 8,
                "linear_units": 2048,
                "num_blocks": 6,
                "input_layer": "linear",
                "pos_enc_layer_type": "rel_pos_espnet",
                "use_cnn_module": False,
                "macaron_style": False,
                "static_chunk_size": 25,
            },
            "decoder": {
                "cfm_params": {
                    "content": {
                        "sigma_min": 1e-6,
                        "t_scheduler": "cosine",
                        "training_cfg_rate": 0.2,
                        "inference_cfg_rate": 0.7,
                        "solver": "euler",
                    }
                },
                "estimator": {
                    "in_channels": 320,
                    "out_channels": 80,
                    "channels": [256],
                    "dropout": 0.0,
                    "attention_head_dim": 64,
                    "n_blocks": 4,
                    "num_mid_blocks": 12,
                    "num_heads": 8,
                    "act_fn": "gelu",
                    "static_chunk_size": 50,
                    "num_decoding_left_chunks": -1,
                },
            },
        }
    }
    assert cosyvoice2_flow.config_from_yaml(yaml) == cosyvoice2_flow.default_config()
    yaml["flow"]["encoder"]["use_cnn_module"] = True
    with pytest.raises(ValueError, match=r"flow\.encoder\.use_cnn_module"):
        cosyvoice2_flow.config_from_yaml(yaml)
