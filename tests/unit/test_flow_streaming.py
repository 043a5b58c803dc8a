"""Streaming token -> mel: chunk by chunk (CosyVoice2 schedule) equals one streaming-mode pass."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs.flow import tiny_config
from sovits2_jax.infer.cosyvoice2.flow_streaming import CachedFlowStreamer, Chunk, FlowStreamer, chunk_plan, stream_all
from sovits2_jax.models.flow import CausalMaskedDiffWithXvec
from sovits2_jax.parallel.sharding import split_params

PROMPT, TOKENS = 30, 80


def test_chunk_plan_matches_cosyvoice2_schedule():
    # prompt 30 -> first hop stretched to 45 so the chunk ends on token 75 = 3 * 25 (counted from the prompt start)
    assert chunk_plan(30, 80) == [Chunk(0, 45, 48, False), Chunk(45, 70, 73, False), Chunk(70, 80, 80, True)]
    assert chunk_plan(50, 27) == [Chunk(0, 27, 27, True)]
    assert chunk_plan(0, 28) == [Chunk(0, 25, 28, False), Chunk(25, 28, 28, True)]


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_config()
    graphdef, params = split_params(CausalMaskedDiffWithXvec(cfg, rngs=nnx.Rngs(3)))
    rng = np.random.default_rng(0)
    data = dict(
        prompt_tokens=rng.integers(0, cfg.vocab_size, (1, PROMPT)).astype(np.int32),
        prompt_feat=rng.standard_normal((1, 2 * PROMPT, 80)).astype(np.float32),
        embedding=rng.standard_normal((1, cfg.spk_embed_dim)).astype(np.float32),
        tokens=rng.integers(0, cfg.vocab_size, (1, TOKENS)).astype(np.int32),
        noise=rng.standard_normal((2 * (PROMPT + 100), 80)).astype(np.float32),
    )
    return graphdef, params, data


def _one_pass(graphdef, params, d, streaming):
    model = nnx.merge(graphdef, params)
    frames = 2 * (PROMPT + TOKENS)
    mel, lengths = jax.jit(
        lambda: model.inference(
            d["tokens"],
            np.array([TOKENS]),
            d["prompt_tokens"],
            np.array([PROMPT]),
            d["prompt_feat"],
            np.array([2 * PROMPT]),
            d["embedding"],
            d["noise"][None, :frames],
            streaming=streaming,
        )
    )()
    assert int(lengths[0]) == 2 * TOKENS
    return np.asarray(mel[0, : 2 * TOKENS])


@pytest.fixture(scope="module")
def one_pass(setup):
    """``one_pass(streaming)``: the whole utterance in one inference call, each mode compiled and run once."""
    graphdef, params, d = setup
    return functools.cache(lambda streaming: _one_pass(graphdef, params, d, streaming))


def test_chunk_by_chunk_equals_one_streaming_pass(setup, one_pass):
    graphdef, params, d = setup
    streamer = FlowStreamer(graphdef, params, d["prompt_tokens"], d["prompt_feat"], d["embedding"], d["noise"])
    chunks = stream_all(streamer, d["tokens"][0], push_size=7)
    assert [c.shape[0] for c in chunks] == [90, 50, 20]
    streamed = np.concatenate(chunks)
    full = one_pass(True)
    np.testing.assert_allclose(streamed, full, atol=1e-4, rtol=1e-4)
    # The comparison is sharp: full-context attention gives different frames.
    assert np.abs(one_pass(False) - full).max() > 1e-2


def test_cached_chunks_equal_one_streaming_pass(setup, one_pass):
    graphdef, params, d = setup
    streamer = CachedFlowStreamer(
        graphdef, params, d["prompt_tokens"], d["prompt_feat"], d["embedding"], d["noise"], max_frames=300
    )
    chunks = stream_all(streamer, d["tokens"][0], push_size=7)
    assert [c.shape[0] for c in chunks] == [90, 50, 20]
    np.testing.assert_allclose(np.concatenate(chunks), one_pass(True), atol=1e-4, rtol=1e-4)


def test_streamer_rejects_short_noise(setup):
    graphdef, params, d = setup
    streamer = FlowStreamer(graphdef, params, d["prompt_tokens"], d["prompt_feat"], d["embedding"], d["noise"][:50])
    with pytest.raises(ValueError, match="noise has 50 frames"):
        list(streamer.push(d["tokens"][0]))
