"""Generation with parameters sharded over a (data, fsdp, tensor) mesh of simulated CPU devices equals the
single-device result."""

import jax
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.infer import generate as gen
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.parallel.rules import SHARDING_RULES
from sovits2_jax.parallel.sharding import activation_rules, param_shardings

BACKBONE = Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)


def test_sharded_generation_equals_single_device():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices")
    config = slm.SpeechLMConfig(backbone=BACKBONE, speech_token_size=40)
    graphdef, params = nnx.split(slm.SpeechLM(config, rngs=nnx.Rngs(0)), nnx.Param)
    rng = np.random.default_rng(0)
    batch = gen.cosyvoice2_batch(
        [rng.integers(0, 128, n).tolist() for n in (3, 5, 2, 4)],
        [rng.integers(0, 128, 4).tolist() for _ in range(4)],
        [rng.integers(0, 40, n).tolist() for n in (9, 1, 6, 3)],
    )
    keys = jax.random.split(jax.random.key(3), 4)
    kw = dict(min_len=batch["min_len"], max_len=batch["max_len"], **gen.speech_decode_kwargs(config))
    fed = rng.integers(0, 40, (4, 12))
    single = gen.generate(graphdef, params, batch["prompt"], batch["prompt_len"], keys, **kw)
    single_logits = gen.decode_logits(graphdef, params, batch["prompt"], batch["prompt_len"], fed)

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = param_shardings(params, mesh, SHARDING_RULES)
    sharded_params = jax.device_put(params, shardings)
    kernel = sharded_params["llm"]["model"]["layers"][0]["mlp"]["gate"]["kernel"][...]
    assert len(kernel.sharding.device_set) > 1  # really spread over devices
    with jax.set_mesh(mesh), activation_rules(SHARDING_RULES):
        sharded = gen.generate(graphdef, sharded_params, batch["prompt"], batch["prompt_len"], keys, **kw)
        sharded_logits = gen.decode_logits(graphdef, sharded_params, batch["prompt"], batch["prompt_len"], fed)
    np.testing.assert_allclose(sharded_logits, single_logits, atol=1e-5, rtol=0)
    assert sharded.rows() == single.rows()
