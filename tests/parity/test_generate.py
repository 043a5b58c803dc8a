"""KV-cache generation: cached decode logits equal full forwards, batching equals single rows, limits and
streaming behave, and greedy decoding equals transformers' greedy ``generate`` on the same Qwen2 weights."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.infer import generate as gen
from sovits2_jax.infer.sampling import SamplingConfig
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.models.speech_lm import SpeechLM, SpeechLMConfig
from sovits2_jax.text.layouts import PAD, SPEECH

pytestmark = pytest.mark.parity

BACKBONE = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
SPEECH_TOKENS = 40


@pytest.fixture(scope="module")
def speech_model():
    config = SpeechLMConfig(backbone=BACKBONE, speech_token_size=SPEECH_TOKENS)
    model = SpeechLM(config, rngs=nnx.Rngs(3))
    # a strong eos/fill bias would hide per-step differences; give the decoder a random bias instead
    bias = jax.random.normal(jax.random.key(5), (config.num_speech_rows,)) * 0.5
    model.llm_decoder.bias[...] = bias
    graphdef, params = nnx.split(model, nnx.Param)
    return config, graphdef, params


def _prompts(rng, lens_text, lens_speech):
    return gen.cosyvoice2_batch(
        [rng.integers(0, BACKBONE.vocab_size, n).tolist() for n in lens_text],
        [rng.integers(0, BACKBONE.vocab_size, 3).tolist() for _ in lens_text],
        [rng.integers(0, SPEECH_TOKENS, n).tolist() for n in lens_speech],
    )


def test_cached_decode_logits_equal_full_forward(speech_model):
    _, graphdef, params = speech_model
    rng = np.random.default_rng(0)
    batch = _prompts(rng, [120, 40, 75], [170, 60, 3])  # prompts of 298, 108, 83 positions
    n_new = 24
    tokens = rng.integers(0, SPEECH_TOKENS, (3, n_new)).astype(np.int32)
    cached = gen.decode_logits(graphdef, params, batch["prompt"], batch["prompt_len"], tokens)

    # full forward over prompt + fed tokens, each row right-padded
    lens = batch["prompt_len"]
    t = int(lens.max()) + n_new
    kinds = np.full((3, t), PAD, np.int32)
    ids = np.zeros((3, t), np.int32)
    for b in range(3):
        p = lens[b]
        kinds[b, :p], ids[b, :p] = batch["prompt"]["kinds"][b, :p], batch["prompt"]["ids"][b, :p]
        kinds[b, p : p + n_new], ids[b, p : p + n_new] = SPEECH, tokens[b]
    model = nnx.merge(graphdef, params)
    full = np.asarray(jax.jit(lambda k, i, n: model(k, i, lengths=n))(kinds, ids, lens + n_new))
    assert int(lens.max()) + n_new >= 300
    for b in range(3):
        want = full[b, lens[b] - 1 : lens[b] + n_new]
        np.testing.assert_allclose(cached[b], want, atol=1e-4, rtol=0)


def test_batch_equals_single_rows_with_ras(speech_model):
    config, graphdef, params = speech_model
    batch = _prompts(np.random.default_rng(1), [5, 6, 4], [7, 2, 11])  # one output bucket (128)
    keys = jax.random.split(jax.random.key(42), 3)
    kw = dict(**gen.speech_decode_kwargs(config), sampling=SamplingConfig())
    together = gen.generate(
        graphdef,
        params,
        batch["prompt"],
        batch["prompt_len"],
        keys,
        min_len=batch["min_len"],
        max_len=batch["max_len"],
        **kw,
    )
    for b in range(3):
        p = batch["prompt_len"][b]
        alone = gen.generate(
            graphdef,
            params,
            {k: v[b : b + 1, :p] for k, v in batch["prompt"].items()},
            batch["prompt_len"][b : b + 1],
            keys[b : b + 1],
            min_len=batch["min_len"][b : b + 1],
            max_len=batch["max_len"][b : b + 1],
            **kw,
        )
        assert alone.rows()[0] == together.rows()[b]
    # per-row limits: at least 2x, at most 20x the text length, eos only after the minimum
    for b, row in enumerate(together.rows()):
        assert batch["min_len"][b] <= len(row) <= batch["max_len"][b]
        assert all(0 <= t < SPEECH_TOKENS for t in row)
        assert together.hit_eos[b] == (len(row) < batch["max_len"][b])


def test_deterministic_and_key_dependent(speech_model):
    config, graphdef, params = speech_model
    batch = _prompts(np.random.default_rng(2), [6, 6], [4, 4])
    kw = dict(min_len=batch["min_len"], max_len=batch["max_len"], **gen.speech_decode_kwargs(config))
    a = gen.generate(graphdef, params, batch["prompt"], batch["prompt_len"], jax.random.key(1), **kw)
    b = gen.generate(graphdef, params, batch["prompt"], batch["prompt_len"], jax.random.key(1), **kw)
    c = gen.generate(graphdef, params, batch["prompt"], batch["prompt_len"], jax.random.key(2), **kw)
    assert a.rows() == b.rows()
    assert a.rows() != c.rows()


def test_min_len_blocks_eos_and_fill_never_emitted(speech_model):
    config, graphdef, params = speech_model
    model = nnx.merge(graphdef, params)
    # make eos and the fill tokens overwhelmingly likely: only the forbidding logic keeps them out
    bias = np.zeros(config.num_speech_rows, np.float32)
    bias[config.eos_id :] = 30.0
    model.llm_decoder.bias[...] = bias
    g2, p2 = nnx.split(model, nnx.Param)
    batch = _prompts(np.random.default_rng(3), [4, 7], [5, 2])
    out = gen.generate(
        g2,
        p2,
        batch["prompt"],
        batch["prompt_len"],
        jax.random.key(0),
        min_len=[6, 11],
        max_len=[50, 50],
        **gen.speech_decode_kwargs(config),
    )
    assert out.lengths.tolist() == [6, 11]  # eos right after the minimum
    assert out.hit_eos.all()
    assert all(t < config.eos_id for row in out.rows() for t in row)


def test_stream_equals_generate(speech_model):
    config, graphdef, params = speech_model
    batch = _prompts(np.random.default_rng(4), [3, 5], [6, 1])
    kw = dict(min_len=batch["min_len"], max_len=batch["max_len"], **gen.speech_decode_kwargs(config))
    full = gen.generate(graphdef, params, batch["prompt"], batch["prompt_len"], jax.random.key(8), **kw)
    pieces = list(gen.stream(graphdef, params, batch["prompt"], batch["prompt_len"], jax.random.key(8), chunk=3, **kw))
    assert len(pieces) > 2
    joined = [[t for p in pieces for t in p[0][b]] for b in range(2)]
    assert joined == full.rows()
    assert pieces[-1][1].all()


def test_bucketing_reuses_compiled_function(speech_model):
    config, graphdef, params = speech_model
    kw = gen.speech_decode_kwargs(config)
    gen._generate_jit.clear_cache()
    for n_text in (4, 5, 6):  # prompts 9..11 positions, max 80..120 new tokens: same buckets
        batch = _prompts(np.random.default_rng(n_text), [n_text], [1])
        gen.generate(
            graphdef,
            params,
            batch["prompt"],
            batch["prompt_len"],
            jax.random.key(0),
            min_len=0,
            max_len=batch["max_len"],
            **kw,
        )
    assert gen._generate_jit._cache_size() == 1
    assert gen.bucket(100) == 128 and gen.bucket(3) == 16 and gen.bucket(128) == 128


def test_greedy_equals_transformers_generate(tmp_path):
    torch = pytest.importorskip("torch")
    import transformers

    from sovits2_jax.convert import hf_qwen2
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.parity.random_reference import save_random_hf_qwen2

    cfg = Qwen2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        tie_word_embeddings=False,
    )
    src = save_random_hf_qwen2(tmp_path / "qwen2", cfg, seed=11)
    ref = transformers.Qwen2ForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    flat = hf_qwen2.load_hf_params(src, cfg)
    graphdef, params = params_from_flat(lambda: Qwen2ForCausalLM(cfg, rngs=nnx.Rngs(0)), flat)

    rng = np.random.default_rng(0)
    lens = [37, 12, 25]
    n_new = 30
    ids = np.zeros((3, max(lens)), np.int32)
    for b, n in enumerate(lens):
        ids[b, :n] = rng.integers(0, cfg.vocab_size, n)
    ours = gen.generate(
        graphdef,
        params,
        {"ids": ids},
        lens,
        jax.random.key(0),
        max_len=n_new,
        sampling=SamplingConfig(method="greedy"),
    )
    for b, n in enumerate(lens):
        with torch.no_grad():
            out = ref.generate(
                torch.as_tensor(ids[b : b + 1, :n], dtype=torch.long),
                attention_mask=torch.ones(1, n, dtype=torch.long),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert ours.rows()[b] == out[0, n:].tolist()
