"""Engine: a batch of requests of different modes and lengths (sft, zero_shot, vc) through one LM decode, one flow
call and one HiFT call equals each request alone with the same seed; streamed rows equal the row streamed alone;
a second process's compilations come from the persistent compilation cache."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs import flow as flow_presets
from sovits2_jax.configs import hift as hift_presets
from sovits2_jax.configs import qwen2 as qwen2_presets
from sovits2_jax.configs.qwen2 import preset
from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig
from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
from sovits2_jax.models.flow import CausalMaskedDiffWithXvec
from sovits2_jax.models.hift import HiFTGenerator
from sovits2_jax.models.speech_lm import SpeechLM, SpeechLMConfig
from sovits2_jax.parallel.sharding import split_params

SPEECH = 64  # the tiny flow's vocabulary = the tiny LM's speech tokens
TEXT_VOCAB = preset("tiny").vocab_size


def random_engine(size: str = "tiny", seed: int = 0, **config) -> Engine:
    """An engine over random-init models of a preset size, deterministic in ``seed``; ``config``: EngineConfig
    fields."""
    flow_cfg = flow_presets.named_config(size)
    if size == "tiny":
        backbone = dataclasses.replace(qwen2_presets.preset("tiny"), tie_word_embeddings=True)
        lm_cfg = SpeechLMConfig(backbone=backbone, speech_token_size=flow_cfg.vocab_size)
    else:
        lm_cfg = SpeechLMConfig(speech_token_size=flow_cfg.vocab_size)
    llm = (*split_params(SpeechLM(lm_cfg, rngs=nnx.Rngs(seed))), lm_cfg)
    flow = split_params(CausalMaskedDiffWithXvec(flow_cfg, rngs=nnx.Rngs(seed + 1)))
    hift = split_params(HiFTGenerator(hift_presets.named_config(size), rngs=nnx.Rngs(seed + 2)))
    return Engine(llm, flow, hift, EngineConfig(**config))


def requests(seed: int = 0) -> list[ModelInput]:
    rng = np.random.default_rng(seed)
    ints = lambda n, hi: rng.integers(0, hi, n)
    emb = lambda: rng.standard_normal(16).astype(np.float32)
    feat = lambda n: (rng.standard_normal((2 * n, 80)) - 4).astype(np.float32)
    text_vocab = TEXT_VOCAB
    sft = ModelInput(text=ints(5, text_vocab), flow_embedding=emb())
    zero_shot = ModelInput(
        text=ints(3, text_vocab),
        prompt_text=ints(4, text_vocab),
        llm_prompt_speech_token=ints(9, SPEECH),
        flow_prompt_speech_token=ints(9, SPEECH),
        prompt_speech_feat=feat(9),
        flow_embedding=emb(),
    )
    vc = ModelInput(
        source_speech_token=ints(36, SPEECH),
        flow_prompt_speech_token=ints(20, SPEECH),
        prompt_speech_feat=feat(20),
        flow_embedding=emb(),
    )
    return [sft, zero_shot, vc]


@pytest.fixture(scope="module")
def engine():
    return random_engine("tiny", max_ratio=8.0)


def test_batched_equals_each_request_alone(engine):
    rows = requests()
    seeds = [10, 11, 12]
    tokens = engine.speech_tokens(rows, seeds)
    assert len({len(t) for t in tokens}) == 3  # rows of different lengths
    np.testing.assert_array_equal(tokens[2], rows[2].source_speech_token)  # vc skips the LM
    batched = engine.synthesize(rows, seeds)
    for i, (row, seed) in enumerate(zip(rows, seeds)):
        (alone,) = engine.synthesize([row], [seed])
        assert batched[i].shape == alone.shape == (len(tokens[i]) * 2 * 480,)
        np.testing.assert_allclose(batched[i], alone, atol=1e-5, rtol=0, err_msg=f"row {i}")
        assert np.abs(alone).max() > 1e-3
    # the keys matter: another seed gives other audio
    (other,) = engine.synthesize([rows[0]], [99])
    assert other.shape != batched[0].shape or np.abs(other - batched[0]).max() > 1e-3


def test_stream_rows_equal_row_streamed_alone(engine):
    rows = requests()
    chunks = {0: [], 2: []}
    for row, chunk in engine.stream([rows[0], rows[2]], [10, 12]):
        chunks[[0, 2][row]].append(chunk)
    alone = [c for _, c in engine.stream([rows[0]], [10])]
    assert len(chunks[0]) == len(alone)
    np.testing.assert_allclose(np.concatenate(chunks[0]), np.concatenate(alone), atol=1e-5, rtol=0)
    # 36 vc tokens after a 20-token prompt: a first chunk of 30 tokens (ends on token 50 = 2 * 25), then 6
    assert len(chunks[2]) == 2
    assert sum(len(c) for c in chunks[2]) == 36 * 2 * 480


def test_bad_requests_are_rejected(engine):
    with pytest.raises(ValueError, match="no text"):
        engine.synthesize([ModelInput(flow_embedding=np.zeros(16, np.float32))])
    with pytest.raises(ValueError, match="2 seeds for 1 requests"):
        engine.synthesize(requests()[:1], [1, 2])


_CACHE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from sovits2_jax.infer import compile_cache
    path = compile_cache.enable(sys.argv[1])
    events = compile_cache.CacheEvents()
    from sovits2_jax.infer.sampling import SamplingConfig, sample_tokens
    logits = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    f = jax.jit(lambda l, k: sample_tokens(l, k, SamplingConfig()))
    tokens = np.asarray(f(logits, jax.random.key(0)))
    print(json.dumps({"hits": events.hits, "misses": events.misses, "tokens": tokens.tolist(),
                      "files": sum(1 for p in path.rglob("*") if p.is_file())}))
    """
)


def test_second_process_compiles_from_the_disk_cache(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT, str(tmp_path / "xla")], env=env,
                             capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["misses"] >= 1 and first["hits"] == 0 and first["files"] >= first["misses"]
    assert second["hits"] >= 1 and second["misses"] == 0 and second["files"] == first["files"]
    assert second["tokens"] == first["tokens"]
