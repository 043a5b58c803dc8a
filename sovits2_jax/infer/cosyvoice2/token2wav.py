"""Speech tokens -> mel (flow) -> waveform (HiFT), offline for a batch of rows and streaming per row, as
CosyVoice2's ``token2wav`` / ``tts`` do it.

Offline: one flow call over the padded batch (per-row prompt and token lengths) and one HiFT call over the padded
mels (per-row keys and lengths, vmapped): HiFT's convolutions see zeros past each row's end and its STFTs end
there, so a row's audio equals HiFT run on that row alone, whatever the batch pads it to.

Streaming (``Token2WavStream``): tokens are pushed as the LM emits them; the cached flow streamer emits the mel of
each finished chunk (first hop stretched to end on a multiple of ``hop`` counted from the prompt start, then hops
growing by ``hop_scale`` up to ``max_hop``, each needing ``lookahead`` tokens of context) and ``HiftStreamer`` turns
it into audio with CosyVoice2's mel/source caches and cross-fade. ``finish`` emits the rest; like the reference's
last ``token2wav`` call (which passes no ``stream`` flag), the last chunk is computed with full attention over all
tokens unless ``final_full_context`` is off (then it comes from the cached streaming pass, which is cheaper).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.infer.cosyvoice2.flow_streaming import CachedFlowStreamer, FlowStreamer
from sovits2_jax.infer.cosyvoice2.hift_streaming import HiftStreamer
from sovits2_jax.infer.generate import fine_bucket

MAX_NOISE_FRAMES = 15000  # CosyVoice2's fixed noise covers 15000 frames (5 minutes)


@functools.lru_cache(maxsize=4)
def fixed_noise(seed: int = 0, frames: int = MAX_NOISE_FRAMES, channels: int = 80) -> np.ndarray:
    """The flow's fixed initial sample [frames, channels] (frame j of every row starts from row j of it)."""
    return np.random.default_rng(seed).standard_normal((frames, channels)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 10))
def _flow(graphdef, params, tokens, token_len, prompt, prompt_len, feat, feat_len, embedding, noise, streaming):
    model = nnx.merge(graphdef, params)
    return model.inference(
        tokens, token_len, prompt, prompt_len, feat, feat_len, embedding, noise, streaming=streaming, finalize=True
    )


@functools.partial(jax.jit, static_argnums=0)
def _hift(graphdef, params, mels, lengths, keys):
    model = nnx.merge(graphdef, params)
    if keys is None:
        return model.inference(mels, None, lengths=lengths)[0]
    return jax.vmap(lambda m, n, k: model.inference(m[None], k, lengths=n[None])[0][0])(mels, lengths, keys)


def _pad_rows(rows: list[np.ndarray], length: int, dtype, tail=()) -> np.ndarray:
    out = np.zeros((len(rows), length, *tail), dtype)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out


def flow_batch(graphdef, params, tokens, prompt_tokens, prompt_feats, embeddings, noise, *, streaming=False):
    """Mel [T_b, M] per row for lists of tokens, prompt tokens, prompt mels and x-vectors (one padded flow call;
    token shapes bucketed to eighths of an octave: ``fine_bucket``)."""
    ratio = nnx.merge(graphdef, params).cfg.token_mel_ratio
    t_len = np.asarray([len(t) for t in tokens], np.int32)
    p_len = np.asarray([len(p) for p in prompt_tokens], np.int32)
    f_len = np.asarray([len(f) for f in prompt_feats], np.int32)
    tb, pb = fine_bucket(t_len.max()), fine_bucket(p_len.max())
    frames = ratio * (tb + pb)
    if frames > noise.shape[0]:
        raise ValueError(f"{frames} mel frames exceed the fixed noise ({noise.shape[0]} frames)")
    m = noise.shape[1]
    mel, lengths = _flow(
        graphdef, params, _pad_rows(tokens, tb, np.int32), t_len, _pad_rows(prompt_tokens, pb, np.int32), p_len,
        _pad_rows(prompt_feats, ratio * pb, np.float32, (m,)), f_len, np.stack(embeddings).astype(np.float32),
        np.broadcast_to(noise[:frames], (len(tokens), frames, m)), streaming,
    )  # fmt: skip
    mel, lengths = np.asarray(mel), np.asarray(lengths)
    return [mel[b, : lengths[b]] for b in range(len(tokens))]


def hift_batch(graphdef, params, mels: list[np.ndarray], keys: list | None) -> list[np.ndarray]:
    """Audio per row from mels [T_b, M] in one HiFT call (per-row keys, or None for no source noise)."""
    scale = nnx.merge(graphdef, params).config.upsample_scale
    lengths = [len(m) for m in mels]
    padded = _pad_rows(mels, fine_bucket(max(lengths), 64), np.float32, (mels[0].shape[1],))
    keys = None if keys is None else jnp.stack(keys)
    wav = np.asarray(_hift(graphdef, params, padded, np.asarray(lengths, np.int32), keys))
    return [wav[b, : n * scale] for b, n in enumerate(lengths)]


def stretch_mel(mel: np.ndarray, speed: float) -> np.ndarray:
    """mel [T, M] resampled to ``int(T / speed)`` frames by linear interpolation (half-frame centres, clamped at the
    edges): CosyVoice2's offline speed change (``F.interpolate(mel, size, mode="linear")`` before HiFT)."""
    if speed == 1.0:
        return mel
    frames = mel.shape[0]
    n = int(frames / speed)
    if n < 1:
        raise ValueError(f"speed {speed} leaves no mel frames of {frames}")
    # float32 as the reference computes the positions and weights
    pos = np.maximum((np.arange(n, dtype=np.float32) + 0.5) * (np.float32(frames) / np.float32(n)) - 0.5, 0.0)
    lo = pos.astype(np.int64)
    w = (pos - lo)[:, None]
    return ((1 - w) * mel[lo] + w * mel[np.minimum(lo + 1, frames - 1)]).astype(np.float32)


class _GrowingHop:
    """CosyVoice2's growing hop (hop, hop*scale, ... up to max_hop) and, optionally, the reference's
    full-attention final chunk, over either flow streamer."""

    def _init_schedule(self, max_hop: int, hop_scale: int, final_full_context: bool) -> None:
        self.max_hop, self.hop_scale, self.final_full_context = max_hop, hop_scale, final_full_context
        self._hop_now = self.hop

    def push(self, tokens):
        self.tokens.extend(int(t) for t in np.asarray(tokens).reshape(-1))
        while len(self.tokens) - self.offset >= self._next_hop + self.lookahead:
            stop = self.offset + self._next_hop
            yield self._emit(self.offset, stop, stop + self.lookahead, finalize=False)
            self._hop_now = min(self.max_hop, self._hop_now * self.hop_scale)
            self.offset, self._next_hop = stop, self._hop_now

    def finish(self) -> np.ndarray:
        if not self.final_full_context:
            return super().finish()
        ratio = self.cfg.token_mel_ratio
        (mel,) = flow_batch(
            self.graphdef, self.params, [np.asarray(self.tokens, np.int32)], [self.prompt_tokens[0]],
            [self.prompt_feat[0]], [self.embedding[0]], self.noise, streaming=False,
        )  # fmt: skip
        start = ratio * self.offset
        self.offset = len(self.tokens)
        return mel[start:]


class GrowingHopFlowStreamer(_GrowingHop, CachedFlowStreamer):
    """The cached streamer (estimator K/V cache: ~4.6 MB per mel frame at CosyVoice2's size) on that schedule."""

    def __init__(self, *args, max_hop: int = 100, hop_scale: int = 2, final_full_context: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_schedule(max_hop, hop_scale, final_full_context)


class GrowingHopRecomputeStreamer(_GrowingHop, FlowStreamer):
    """The recomputing streamer (no cache; each chunk re-runs the flow over all tokens) on that schedule."""

    def __init__(self, *args, max_hop: int = 100, hop_scale: int = 2, final_full_context: bool = True, **kwargs):
        for cache_only in ("max_frames", "frame_bucket"):
            kwargs.pop(cache_only, None)
        super().__init__(*args, **kwargs)
        self._init_schedule(max_hop, hop_scale, final_full_context)


class Token2WavStream:
    """One request's streaming token2wav: ``push(tokens)`` -> audio chunks that became final, ``finish()`` -> the
    rest. ``hift_key`` None = deterministic excitation (no random phase or noise); ``cached`` picks the
    estimator-cache streamer (``max_frames`` bounds its memory) over the recomputing one."""

    def __init__(self, flow, hift, prompt_tokens, prompt_feat, embedding, noise, *, hift_key=None, hop=25,
                 max_hop=100, hop_scale=2, max_frames=3000, final_full_context=True, cached=True):  # fmt: skip
        flow_graphdef, flow_params = flow
        ratio = nnx.merge(flow_graphdef, flow_params).cfg.token_mel_ratio
        streamer = GrowingHopFlowStreamer if cached else GrowingHopRecomputeStreamer
        self.flow = streamer(
            flow_graphdef, flow_params, np.asarray(prompt_tokens, np.int32), prompt_feat, embedding, noise,
            bucket=2 * hop, max_frames=max_frames, frame_bucket=ratio * hop, max_hop=max_hop,
            hop_scale=hop_scale, final_full_context=final_full_context,
        )  # fmt: skip
        if self.flow.hop != hop:
            raise ValueError(f"hop {hop} must equal the flow's static chunk size {self.flow.hop}")
        self.hift = HiftStreamer(*hift, key=hift_key)

    def push(self, tokens) -> list[np.ndarray]:
        return [self.hift.push(mel) for mel in self.flow.push(tokens)]

    def finish(self) -> np.ndarray:
        return self.hift.push(self.flow.finish(), finalize=True)


def frames_needed(prompt_tokens: int, max_tokens: int, ratio: int) -> int:
    """Mel frames (prompt included) a stream of up to ``max_tokens`` can reach: the streamer's cache size."""
    return ratio * (prompt_tokens + max_tokens)
