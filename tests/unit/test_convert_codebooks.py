"""The speech LM's torch state-dict rules with several codebooks per frame: the stacked extra codebooks round-trip
exactly, a one-codebook config keeps its keys, and a state dict without the codebooks is refused."""

import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert import cosyvoice2_llm
from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten
from sovits2_jax.convert.params import params_to_flat
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config

BACKBONE = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


def _config(k):
    return slm.SpeechLMConfig(backbone=BACKBONE, speech_token_size=20, layout="gpt_sovits2", num_codebooks=k,
                              extra_codebook_size=12 if k > 1 else 0)  # fmt: skip


def _params(config):
    return unflatten(params_to_flat(nnx.state(slm.SpeechLM(config, rngs=nnx.Rngs(0)), nnx.Param)))


def test_extra_codebooks_round_trip_in_torch_layout():
    config = _config(3)
    params = _params(config)
    items = dict(cosyvoice2_llm.params_to_torch(params, config))
    assert items["codebook_embedding"].shape == (2, 12, 32)
    np.testing.assert_array_equal(items["codebook_decoder.weight"][1], params["codebooks"]["kernel"][1].T)
    assert items["codebook_decoder.bias"].shape == (2, 12)
    back = flatten(cosyvoice2_llm.torch_to_params(items.items(), config))
    want = flatten(params)
    assert set(back) == set(want) and all(np.array_equal(back[k], want[k]) for k in want)
    one = dict(cosyvoice2_llm.params_to_torch(_params(_config(1)), _config(1)))
    assert set(items) - set(one) == {"codebook_embedding", "codebook_decoder.weight", "codebook_decoder.bias"}
    with pytest.raises(ConversionError, match="codebook_embedding"):
        cosyvoice2_llm.torch_to_params(one.items(), config)
    with pytest.raises(ConversionError, match="codebook_embedding"):
        cosyvoice2_llm.torch_to_params(items.items(), _config(1))
