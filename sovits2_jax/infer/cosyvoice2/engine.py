"""The CosyVoice2 synthesis engine: any mix of requests (``ModelInput`` rows of every mode) through one batched LM
decode, one flow call and one HiFT call (``synthesize``), or streamed chunk by chunk (``stream``).

Rows are independent: row i draws everything from its own key (``row_keys``): the LM samples with
``fold_in(key, 0)``, HiFT's excitation with ``fold_in(key, 1)``; the flow's initial sample is CosyVoice2's fixed
noise, the same for every row. So a row's audio equals the request run alone with the same seed. vc rows skip
the LM and re-voice their ``source_speech_token``. Batches are padded to power-of-two sizes (copies of row 0)
and every length is bucketed, so a server compiles a bounded set of shapes, once each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx

from sovits2_jax.infer import generate as gen
from sovits2_jax.infer.bistream import bistream_generate
from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
from sovits2_jax.infer.cosyvoice2.token2wav import (
    Token2WavStream,
    fixed_noise,
    flow_batch,
    frames_needed,
    hift_batch,
    stretch_mel,
)
from sovits2_jax.models.sampling_config import SamplingConfig


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Decoding limits (CosyVoice2: 2x..20x the text length), the streaming schedule and noise settings."""

    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    min_ratio: float = 2.0
    max_ratio: float = 20.0
    token_hop: int = 25
    max_hop: int = 100
    hop_scale: int = 2
    decode_chunk: int = 8  # LM steps between looks at the streams
    final_full_context: bool = True  # the last stream chunk with full attention, as the reference
    hift_noise: bool = True  # False: no random excitation phase/noise (deterministic)
    noise_seed: int = 0
    max_cached_frames: int = 2000  # longer streams use the recomputing flow streamer (the cache is ~4.6 MB/frame)


def row_keys(seed: int | Sequence[int], n: int) -> list[jax.Array]:
    """One key per row: ``seed`` is a list of per-row seeds, or an int (row i then uses seed + i)."""
    seeds = [int(seed) + i for i in range(n)] if np.ndim(seed) == 0 else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} requests")
    return [jax.random.key(s) for s in seeds]


def lm_key(row_key: jax.Array) -> jax.Array:
    """The key a row's LM decode samples with (step i of the decode uses ``fold_in(lm_key, i)``)."""
    return jax.random.fold_in(row_key, 0)


def _batch_size(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class Engine:
    """``llm``: (graphdef, params, SpeechLMConfig) or None (vc only); ``flow`` and ``hift``: (graphdef, params)."""

    def __init__(self, llm, flow, hift, config: EngineConfig = EngineConfig()):
        self.llm, self.flow, self.hift, self.config = llm, tuple(flow), tuple(hift), config
        self.noise = fixed_noise(config.noise_seed)
        self.ratio = nnx.merge(*self.flow).cfg.token_mel_ratio

    # ------------------------------------------------------------------------------------------ LM
    def _lm_batch(self, rows: list[ModelInput], keys: list[jax.Array]):
        """Padded LM prompts for the rows (batch padded to a power of two with copies of row 0)."""
        if self.llm is None:
            raise ValueError("this engine has no LM; only vc requests (source_speech_token) can be served")
        for r in rows:
            if len(r.text) == 0:
                raise ValueError("a request has no text to synthesise")
        pad = _batch_size(len(rows)) - len(rows)
        rows, keys = rows + [rows[0]] * pad, keys + [keys[0]] * pad
        c = self.config
        batch = gen.cosyvoice2_batch(
            [r.text for r in rows], [r.prompt_text for r in rows], [r.llm_prompt_speech_token for r in rows],
            min_ratio=c.min_ratio, max_ratio=c.max_ratio,
        )  # fmt: skip
        lm_keys = jax.numpy.stack([lm_key(k) for k in keys])
        kwargs = dict(sampling=c.sampling, **gen.speech_decode_kwargs(self.llm[2]))
        return batch, lm_keys, kwargs

    def _generate(self, rows, keys) -> list[np.ndarray]:
        batch, lm_keys, kwargs = self._lm_batch(rows, keys)
        out = gen.generate(self.llm[0], self.llm[1], batch["prompt"], batch["prompt_len"], lm_keys,
                           max_len=batch["max_len"], min_len=batch["min_len"], **kwargs)  # fmt: skip
        return [np.asarray(t, np.int32) for t in out.rows()[: len(rows)]]

    def speech_tokens(self, inputs: list[ModelInput], seed: int | Sequence[int] = 0) -> list[np.ndarray]:
        """The speech tokens of every row (the LM's for tts rows, the source tokens for vc rows)."""
        keys = row_keys(seed, len(inputs))
        lm = [i for i, x in enumerate(inputs) if not x.is_vc]
        tokens = [x.source_speech_token if x.is_vc else None for x in inputs]
        if lm:
            for i, t in zip(lm, self._generate([inputs[i] for i in lm], [keys[i] for i in lm])):
                tokens[i] = t
        return tokens

    # ------------------------------------------------------------------------------------- offline
    def token2wav(
        self, inputs: list[ModelInput], tokens: list[np.ndarray], keys: list[jax.Array], speed: float = 1.0
    ) -> list:
        """Audio per row from its speech tokens: one flow call, one HiFT call; ``speed`` != 1 stretches each mel
        to 1/speed of its frames before HiFT (CosyVoice2's offline speed change)."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        for i, t in enumerate(tokens):
            if len(t) == 0:
                raise ValueError(f"request {i}: no speech tokens to vocode")
        n = len(inputs)
        pad = _batch_size(n) - n
        rows, tokens = inputs + [inputs[0]] * pad, tokens + [tokens[0]] * pad
        mels = flow_batch(
            *self.flow, tokens, [r.flow_prompt_speech_token for r in rows], [r.prompt_speech_feat for r in rows],
            [r.flow_embedding for r in rows], self.noise,
        )  # fmt: skip
        mels = [stretch_mel(m, speed) for m in mels]
        hift_keys = None
        if self.config.hift_noise:
            hift_keys = [jax.random.fold_in(k, 1) for k in keys + [keys[0]] * pad]
        return hift_batch(*self.hift, mels, hift_keys)[:n]

    def synthesize(
        self, inputs: list[ModelInput], seed: int | Sequence[int] = 0, speed: float = 1.0
    ) -> list[np.ndarray]:
        """Audio (float32, the HiFT sample rate) for every request; see ``row_keys`` for ``seed``."""
        if not inputs:
            return []
        keys = row_keys(seed, len(inputs))
        return self.token2wav(list(inputs), self.speech_tokens(inputs, seed), keys, speed)

    # ------------------------------------------------------------------------------------ streaming
    def _streamer(self, x: ModelInput, key, max_tokens: int) -> Token2WavStream:
        c = self.config
        frames = frames_needed(len(x.flow_prompt_speech_token), max_tokens, self.ratio)
        return Token2WavStream(
            self.flow, self.hift, x.flow_prompt_speech_token, x.prompt_speech_feat, x.flow_embedding, self.noise,
            hift_key=jax.random.fold_in(key, 1) if c.hift_noise else None, hop=c.token_hop, max_hop=c.max_hop,
            hop_scale=c.hop_scale, final_full_context=c.final_full_context,
            max_frames=frames, cached=frames <= c.max_cached_frames,
        )  # fmt: skip

    def stream_bistream(
        self, prompt: ModelInput, text_pieces: Iterable[Sequence[int]], seed: int = 0, max_tokens: int = 2000
    ) -> Iterator[np.ndarray]:
        """Audio chunks while the text itself streams in (CosyVoice2's bistream: ``text_pieces`` are lists of text
        token ids, e.g. from a text LLM): speech tokens from ``infer.bistream`` go to the streaming token2wav every
        ``token_hop`` tokens. ``prompt``: the prompt's text, LM / flow prompt tokens, mel and embedding."""
        key = row_keys(seed, 1)[0]
        graphdef, params, config = self.llm
        streamer = self._streamer(prompt, key, max_tokens)
        tokens = bistream_generate(graphdef, params, config, text_pieces, prompt.prompt_text,
                                   prompt.llm_prompt_speech_token, lm_key(key), sampling=self.config.sampling,
                                   max_len=max_tokens)  # fmt: skip
        pending: list[int] = []
        for token in tokens:
            pending.append(token)
            if len(pending) >= self.config.token_hop:
                yield from (chunk for chunk in streamer.push(pending) if len(chunk))
                pending = []
        yield from (chunk for chunk in streamer.push(pending) if len(chunk))
        yield streamer.finish()

    def stream(self, inputs: list[ModelInput], seed: int | Sequence[int] = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (row, audio chunk) as chunks exist; the rows' LM decodes share one batched decode loop. The
        concatenated chunks of a row are that request streamed alone."""
        for row, chunk, _ in self.stream_events(inputs, seed):
            yield row, chunk

    def stream_events(self, inputs: list[ModelInput], seed: int | Sequence[int] = 0):
        """``stream`` with a third item: True on each row's last chunk."""
        inputs = list(inputs)
        keys = row_keys(seed, len(inputs))
        c = self.config
        for i, x in enumerate(inputs):
            if x.is_vc:
                if len(x.source_speech_token) == 0:
                    raise ValueError(f"request {i}: vc needs source speech tokens")
                s = self._streamer(x, keys[i], len(x.source_speech_token))
                for chunk in s.push(x.source_speech_token):
                    yield i, chunk, False
                yield i, s.finish(), True
        lm = [i for i, x in enumerate(inputs) if not x.is_vc]
        if not lm:
            return
        batch, lm_keys, kwargs = self._lm_batch([inputs[i] for i in lm], [keys[i] for i in lm])
        streams = {i: self._streamer(inputs[i], keys[i], int(batch["max_len"][j])) for j, i in enumerate(lm)}
        finished = set()
        steps = gen.stream(
            self.llm[0], self.llm[1], batch["prompt"], batch["prompt_len"], lm_keys,
            max_len=batch["max_len"], min_len=batch["min_len"], chunk=c.decode_chunk, **kwargs,
        )  # fmt: skip
        for new, done in steps:
            for j, i in enumerate(lm):
                if i in finished:
                    continue
                for chunk in streams[i].push(new[j]):
                    yield i, chunk, False
                if done[j]:
                    finished.add(i)
                    if not streams[i].flow.tokens:
                        raise ValueError(f"request {i}: the LM produced no speech tokens")
                    yield i, streams[i].finish(), True
