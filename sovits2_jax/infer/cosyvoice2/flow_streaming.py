"""Chunked (streaming) token -> mel with CosyVoice2's schedule, equal to one streaming-mode pass.

Schedule (CosyVoice2Model.tts): chunks end on multiples of ``token_hop_len`` (25) counted from the start of the
prompt tokens (the first hop is stretched by the prompt's remainder), and each chunk needs ``pre_lookahead_len`` (3)
tokens beyond its end as look-ahead context; the last chunk takes whatever remains with ``finalize``.

Why this equals one streaming pass over all tokens: in streaming mode every attention layer uses static chunk masks
aligned to those same boundaries (25 tokens in the encoder, 50 frames after upsampling and in the estimator) and
every convolution is causal except the pre-lookahead conv, which sees the context tokens. So frames of completed
chunks never depend on later tokens, at every Euler step, and the initial noise of frame j is always noise[j].

Two streamers. ``FlowStreamer`` re-runs the flow over prompt + all tokens so far for every chunk (as the
reference) and keeps the new frames: a whole utterance costs O(chunks x length). ``CachedFlowStreamer`` gives the
same frames without recomputing the prefix in the estimator (~95% of the work): nothing in completed chunks ever
changes, so it keeps, per Euler step and CFG branch, the K/V of the 56 attention layers and the tails of the causal
convs (``flow_cached_streaming.py``), and runs the estimator only on the new frames. The price is memory:
56 * 10 * 2 * 2 * 512 floats = 4.6 MB per mel frame in float32 (about 3.7 GB for 16 s with its prompt; half in
bf16), bounded by ``max_frames``. The encoder (~5%) is still re-run over all tokens; its cache would be small
but is not written.
Both streamers bucket shapes (tokens to multiples of ``bucket``, new frames to multiples of ``frame_bucket``;
padded frames are masked and, the model being causal, cannot affect valid ones), so a stream compiles a handful
of shapes, not one per chunk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.infer.cosyvoice2 import flow_cached_streaming as cached
from sovits2_jax.infer.generate import fine_bucket
from sovits2_jax.models.flow.flow import concat_padded


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Tokens [0, end) go in; mel frames for generated tokens [start, stop) come out."""

    start: int
    stop: int
    end: int
    finalize: bool


def chunk_plan(prompt_tokens: int, total_tokens: int, hop: int = 25, lookahead: int = 3) -> list[Chunk]:
    """The chunks CosyVoice2 streams for ``total_tokens`` generated tokens after a prompt of ``prompt_tokens``."""
    if hop <= 0 or lookahead < 0 or prompt_tokens < 0 or total_tokens < 0:
        raise ValueError(f"chunk_plan: bad arguments hop={hop} lookahead={lookahead} prompt={prompt_tokens}")
    first_extra = math.ceil(prompt_tokens / hop) * hop - prompt_tokens
    plan, offset = [], 0
    while True:
        this_hop = hop + first_extra if offset == 0 else hop
        if total_tokens - offset >= this_hop + lookahead:
            plan.append(Chunk(offset, offset + this_hop, offset + this_hop + lookahead, False))
            offset += this_hop
        else:
            plan.append(Chunk(offset, total_tokens, total_tokens, True))
            return plan


class FlowStreamer:
    """Feeds tokens as they are generated and yields the new mel frames of each finished chunk (batch 1).

    ``noise`` [>= ratio * (prompt + max tokens), M] is the fixed initial sample (frame j always starts from
    noise[j]); ``bucket`` pads the recomputed sequence to a multiple of that many tokens.
    """

    def __init__(self, graphdef, params, prompt_tokens, prompt_feat, embedding, noise, *, bucket: int = 50):
        self.graphdef, self.params = graphdef, params
        model_cfg = nnx.merge(graphdef, params).cfg
        self.cfg = model_cfg
        self.prompt_tokens = np.asarray(prompt_tokens, np.int32).reshape(1, -1)
        self.prompt_feat = np.asarray(prompt_feat, np.float32).reshape(1, -1, model_cfg.output_size)
        self.embedding = np.asarray(embedding, np.float32).reshape(1, -1)
        self.noise = np.asarray(noise, np.float32)
        if self.noise.ndim != 2 or self.noise.shape[1] != model_cfg.output_size:
            raise ValueError(f"noise must be [frames, {model_cfg.output_size}], got {self.noise.shape}")
        self.hop, self.lookahead = model_cfg.encoder.static_chunk_size, model_cfg.encoder.pre_lookahead_len
        self.bucket = bucket
        self.tokens: list[int] = []
        self.offset = 0
        first_extra = math.ceil(self.prompt_tokens.shape[1] / self.hop) * self.hop - self.prompt_tokens.shape[1]
        self._next_hop = self.hop + first_extra

    def push(self, tokens) -> Iterator[np.ndarray]:
        """Adds generated tokens; yields mel [frames, M] for every chunk that became complete."""
        self.tokens.extend(int(t) for t in np.asarray(tokens).reshape(-1))
        while len(self.tokens) - self.offset >= self._next_hop + self.lookahead:
            stop = self.offset + self._next_hop
            yield self._emit(self.offset, stop, stop + self.lookahead, finalize=False)
            self.offset, self._next_hop = stop, self.hop

    def finish(self) -> np.ndarray:
        """The frames of all remaining tokens (look-ahead zero-padded, as the reference's last chunk)."""
        out = self._emit(self.offset, len(self.tokens), len(self.tokens), finalize=True)
        self.offset = len(self.tokens)
        return out

    def _emit(self, start: int, stop: int, end: int, *, finalize: bool) -> np.ndarray:
        ratio, prompt = self.cfg.token_mel_ratio, self.prompt_tokens.shape[1]
        padded = max(self.bucket, math.ceil(end / self.bucket) * self.bucket)
        toks = np.zeros((1, padded), np.int32)
        toks[0, :end] = self.tokens[:end]
        frames = ratio * (prompt + padded)
        if self.noise.shape[0] < frames:
            raise ValueError(f"noise has {self.noise.shape[0]} frames; this chunk needs {frames}")
        mel, lengths = _RUN(
            self.graphdef,
            self.params,
            toks,
            np.array([end], np.int32),
            self.prompt_tokens,
            self.prompt_feat,
            self.embedding,
            finalize,
            self.noise[None, :frames],
        )
        prompt_frames = self.prompt_feat.shape[1]
        lo = ratio * (prompt + start) - prompt_frames
        hi = ratio * (prompt + stop) - prompt_frames
        assert hi <= int(lengths[0]), "chunk frames beyond the generated length"
        return np.asarray(mel[0, lo:hi])


def _run_chunk(graphdef, params, tokens, token_lengths, prompt_tokens, prompt_feat, embedding, finalize, noise):
    model = nnx.merge(graphdef, params)
    p = prompt_tokens.shape[1]
    return model.inference(
        tokens,
        token_lengths,
        prompt_tokens,
        jnp.array([p], jnp.int32),
        prompt_feat,
        jnp.array([prompt_feat.shape[1]], jnp.int32),
        embedding,
        noise,
        streaming=True,
        finalize=finalize,
    )


# Module-level so that every streamer shares the compiled shapes.
_RUN = jax.jit(_run_chunk, static_argnums=(0, 7))


def stream_all(streamer: FlowStreamer, tokens, push_size: int = 5) -> list[np.ndarray]:
    """Pushes ``tokens`` ``push_size`` at a time (as an LLM would emit them); returns every chunk's mel."""
    tokens = np.asarray(tokens).reshape(-1)
    chunks = []
    for i in range(0, len(tokens), push_size):
        chunks.extend(streamer.push(tokens[i : i + push_size]))
    chunks.append(streamer.finish())
    return chunks


class CachedFlowStreamer(FlowStreamer):
    """As ``FlowStreamer``, but the estimator (the ~95% of the work) runs only on each chunk's new frames, reading
    the K/V and conv tails of earlier frames from a per-Euler-step cache (see ``cached``); the encoder is still
    re-run over all tokens (bucketed), which is cheap. ``max_frames`` bounds prompt + generated mel frames."""

    def __init__(self, *args, max_frames: int = 1000, frame_bucket: int = 100, **kwargs):
        super().__init__(*args, **kwargs)
        model = nnx.merge(self.graphdef, self.params)
        self.max_frames, self.frame_bucket = max_frames, frame_bucket
        self.cache = cached.empty_cache(
            model.estimator, 1, frame_bucket, max_frames + frame_bucket, model.cfg.cfm.n_timesteps, jnp.float32
        )
        self.done_frames = 0  # absolute mel frames (prompt included) already produced

    def _emit(self, start: int, stop: int, end: int, *, finalize: bool) -> np.ndarray:
        ratio, prompt = self.cfg.token_mel_ratio, self.prompt_tokens.shape[1]
        padded = max(self.bucket, math.ceil(end / self.bucket) * self.bucket)
        toks = np.zeros((1, padded), np.int32)
        toks[0, :end] = self.tokens[:end]
        a, b = self.done_frames, ratio * (prompt + stop)
        if b > self.max_frames:
            raise ValueError(f"stream reached {b} mel frames; the cache holds max_frames={self.max_frames}")
        width = max(self.frame_bucket, math.ceil((b - a) / self.frame_bucket) * self.frame_bucket)
        if self.noise.shape[0] < b:
            raise ValueError(f"noise has {self.noise.shape[0]} frames; this chunk needs {b}")
        noise = np.zeros((1, width, self.noise.shape[1]), np.float32)
        noise[0, : b - a] = self.noise[a:b]
        cached_frames = self.cache["kv"][0][0].shape[2]
        visible = 0 if a == 0 else min(fine_bucket(a, self.frame_bucket), cached_frames)  # frames before a, bucketed
        mel, self.cache = _RUN_CACHED(
            self.graphdef, self.params, toks, np.array([end], np.int32), self.prompt_tokens, self.prompt_feat,
            self.embedding, finalize, width, self.cache, noise, np.int32(a),
            np.int32(b - a), visible,
        )  # fmt: skip
        self.done_frames = b
        skip = max(self.prompt_feat.shape[1] - a, 0)
        return np.asarray(mel[0, skip : b - a])


def _run_cached_chunk(
    graphdef,
    params,
    tokens,
    token_lengths,
    prompt_tokens,
    prompt_feat,
    embedding,
    finalize,
    width,
    cache,
    noise,
    offset,
    n_valid,
    visible,
):
    model = nnx.merge(graphdef, params)
    cfg = model.cfg
    p = prompt_tokens.shape[1]
    all_tokens = concat_padded(prompt_tokens, jnp.array([p], jnp.int32), tokens, token_lengths)
    all_lengths = p + token_lengths
    enc_lengths = all_lengths - (0 if finalize else cfg.encoder.pre_lookahead_len)
    mu, _ = model.encode(all_tokens, enc_lengths, streaming=True, lookahead_lengths=all_lengths)
    frames = mu.shape[1]
    cond = jnp.zeros((1, frames, cfg.output_size), mu.dtype).at[:, : prompt_feat.shape[1]].set(prompt_feat)
    pad = lambda y: jnp.pad(y, ((0, 0), (0, width), (0, 0)))
    mu_new = jax.lax.dynamic_slice_in_dim(pad(mu), offset, width, axis=1)
    cond_new = jax.lax.dynamic_slice_in_dim(pad(cond), offset, width, axis=1)
    spks = model.project_speaker(embedding)
    return cached.sample_chunk(
        model.estimator, noise, mu_new, spks, cond_new, cache, offset, n_valid, cfg.cfm, visible=visible
    )


_RUN_CACHED = jax.jit(_run_cached_chunk, static_argnums=(0, 7, 8, 13), donate_argnums=(9,))
