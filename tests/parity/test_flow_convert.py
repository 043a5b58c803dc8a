"""flow.pt <-> our flow parameters: bit-exact round trip, strict key errors, yaml config."""

from __future__ import annotations

import numpy as np
import pytest

from sovits2_jax.configs.flow import tiny_config
from sovits2_jax.convert import cosyvoice2_flow
from sovits2_jax.convert.mapping import ConversionError
from sovits2_jax.models.flow.config import FlowConfig

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def flow_pt(tmp_path_factory):
    import torch

    from sovits2_jax.parity.references.flow import build_reference

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


# The flow section of examples/libritts/cosyvoice2/conf/cosyvoice2.yaml, in its hyperpyyaml form.
COSYVOICE2_FLOW_YAML = """
spk_embed_dim: 192
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 512
        attention_heads: 8
        linear_units: 2048
        num_blocks: 6
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 512
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [256]
            dropout: 0.0
            attention_head_dim: 64
            n_blocks: 4
            num_mid_blocks: 12
            num_heads: 8
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>
"""


def test_config_from_cosyvoice2_yaml():
    from sovits2_jax.convert.hyperpyyaml import load_hyperpyyaml

    cfg = load_hyperpyyaml(COSYVOICE2_FLOW_YAML)
    assert cosyvoice2_flow.config_from_yaml(cfg) == cosyvoice2_flow.default_config()
    cfg["flow"]["encoder"]["use_cnn_module"] = True
    with pytest.raises(ValueError, match=r"flow\.encoder\.use_cnn_module"):
        cosyvoice2_flow.config_from_yaml(cfg)


def _tiny_yaml() -> str:
    text = COSYVOICE2_FLOW_YAML.replace("spk_embed_dim: 192", "spk_embed_dim: 16")
    text = text.replace("vocab_size: 6561", "vocab_size: 64").replace("num_blocks: 6", "num_blocks: 1")
    text = text.replace("linear_units: 2048", "linear_units: 256").replace("channels: [256]", "channels: [64]")
    text = text.replace("attention_head_dim: 64", "attention_head_dim: 32").replace("n_blocks: 4", "n_blocks: 1")
    return text.replace("num_mid_blocks: 12", "num_mid_blocks: 2").replace("num_heads: 8", "num_heads: 2")


def test_model_directory_round_trip(flow_pt, tmp_path):
    """flow.pt inside a CosyVoice2 model directory -> Orbax (flow/ sub-checkpoint) -> flow.pt, bit-exact."""
    import shutil

    import torch

    from sovits2_jax.convert import cosyvoice2

    path, state = flow_pt
    src = tmp_path / "CosyVoice2-tiny"
    src.mkdir()
    (src / "cosyvoice2.yaml").write_text(_tiny_yaml())
    shutil.copy(path, src / "flow.pt")
    cosyvoice2.torch_to_jax(src, tmp_path / "jax")
    params, config = cosyvoice2.load_part(tmp_path / "jax", "flow")
    assert config == tiny_config()
    np.testing.assert_array_equal(params["encoder_proj"]["kernel"], state["encoder_proj.weight"].T)
    cosyvoice2.jax_to_torch(tmp_path / "jax", tmp_path / "back")
    back = torch.load(tmp_path / "back" / "flow.pt", weights_only=True)
    assert set(back) == set(state)  # epoch/step dropped
    for key, value in state.items():
        assert np.array_equal(back[key].numpy(), value), key
