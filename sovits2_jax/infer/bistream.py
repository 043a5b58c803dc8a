"""CosyVoice2 bistream inference (``Qwen2LM.inference_bistream``): text arrives in pieces (e.g. from a text
LLM) and speech tokens are produced while it streams, one row at a time.

The model sees the layout it was trained on in bistream mode: ``sos``, then blocks of mix[0] text + mix[1]
speech tokens. The prompt's speech is interleaved with the first text as soon as enough text has arrived; then
the model writes speech until it emits the fill token, which asks for the next mix[0] text tokens (after the
first fill, one is forced every mix[1] + 1 tokens). When the text ends, the rest of it and ``task_id`` follow and
decoding runs to eos. The host drives the sequence; each piece runs through the same jitted KV-cache code as
``generate``. Sequence construction follows the reference step by step, including that the input which
produced the last fill token is given to the model once more before the final text (the reference keeps it in
its pending input).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.infer.generate import RECENT, bucket
from sovits2_jax.infer.sampling import SamplingConfig, sample_tokens
from sovits2_jax.models.qwen2 import KVCache, init_cache
from sovits2_jax.models.speech_lm import SpeechLMConfig
from sovits2_jax.text.layouts import PAD, SOS, SPECIAL, SPEECH, TASK_ID, TEXT


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _feed(graphdef, params, cache: KVCache, kinds, ids, n):
    """Appends the first ``n`` of the [1, T] items to the cache; logits after the last one."""
    model = nnx.merge(graphdef, params)
    hidden, new = model.llm.model(inputs_embeds=model.embed(kinds, ids), cache=cache)
    last = jax.lax.dynamic_index_in_dim(hidden, n - 1, axis=1, keepdims=False)
    return model.llm_decoder(last).astype(jnp.float32), KVCache(new.k, new.v, cache.index + n)


_sample = jax.jit(sample_tokens, static_argnums=(2,))


class _Decoder:
    """A single-row KV cache fed with (kind, id) items; grows its capacity in powers of two."""

    def __init__(self, graphdef, params, config: SpeechLMConfig, capacity: int):
        self.graphdef, self.params, self.config = graphdef, params, config
        dtype = jnp.dtype(config.backbone.dtype)
        self.cache = init_cache(config.backbone, 1, bucket(capacity, 64), dtype)
        self.length = 0

    def feed(self, items: Sequence[tuple[int, int]]) -> jax.Array:
        n = len(items)
        t = bucket(n, 8)
        if self.length + t > self.cache.k.shape[2]:
            grow = bucket(self.length + t, 64) - self.cache.k.shape[2]
            pad = ((0, 0), (0, 0), (0, grow), (0, 0), (0, 0))
            self.cache = KVCache(jnp.pad(self.cache.k, pad), jnp.pad(self.cache.v, pad), self.cache.index)
        kinds = np.full((1, t), PAD, np.int32)
        ids = np.zeros((1, t), np.int32)
        kinds[0, :n] = [k for k, _ in items]
        ids[0, :n] = [i for _, i in items]
        logits, self.cache = _feed(self.graphdef, self.params, self.cache, kinds, ids, jnp.int32(n))
        self.length += n
        return logits


def bistream_generate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    config: SpeechLMConfig,
    text_pieces: Iterable[Sequence[int]],
    prompt_text: Sequence[int],
    prompt_speech: Sequence[int],
    key: jax.Array,
    *,
    sampling: SamplingConfig = SamplingConfig(),
    max_len: int = 2000,
    capacity: int = 512,
    chooser: Callable[[np.ndarray, list[int], bool], int] | None = None,
) -> Iterator[int]:
    """Yields speech tokens while ``text_pieces`` (lists of text token ids) streams in.

    ``max_len`` bounds the number of speech tokens (the reference has no bound; it waits for eos).
    Tokens the reference would reject with an error (the unused id above eos; eos while text is still
    streaming; fill tokens after the text ended) are never sampled. ``chooser(logits [V], tokens so far,
    text_ended)``, if given, picks each token instead of ``sampling`` (external or scripted decoding).
    """
    m0, m1 = config.mix_ratio
    eos, fill = config.eos_id, config.fill_id
    vocab = config.num_speech_rows
    decoder = _Decoder(graphdef, params, config, capacity)
    pending: list[tuple[int, int]] = [(SPECIAL, SOS)]  # the reference's lm_input
    text_cache = [int(t) for t in prompt_text]
    speech_left = [int(t) for t in prompt_speech]
    out: list[int] = []
    emitted = 0
    next_fill = -1

    def sample(logits, text_ended: bool) -> int:
        if chooser is not None:
            return int(chooser(np.asarray(logits[0]), list(out), text_ended))
        forbidden = np.zeros((1, vocab), bool)
        forbidden[0, [eos + 1, fill] if text_ended else [eos, eos + 1]] = True
        window = out[-RECENT:]
        recent = np.zeros((1, RECENT), np.int32)
        valid = np.zeros((1, RECENT), bool)
        if window:
            recent[0, -len(window) :] = window
            valid[0, -len(window) :] = True
        step_key = jax.random.fold_in(key, len(out))[None]
        return int(_sample(logits, step_key, sampling, recent=recent, recent_valid=valid, forbidden=forbidden)[0])

    for piece in text_pieces:
        text_cache += [int(t) for t in piece]
        while speech_left and len(text_cache) >= m0:
            pending += [(TEXT, t) for t in text_cache[:m0]] + [(SPEECH, s) for s in speech_left[:m1]]
            text_cache, speech_left = text_cache[m0:], speech_left[m1:]
        if speech_left:
            continue  # not enough text yet to place the rest of the prompt's speech
        after_fill = bool(out) and out[-1] == fill
        if after_fill or (not out and pending == [(SPECIAL, SOS)]):
            if len(text_cache) < m0:
                continue
            block = [(TEXT, t) for t in text_cache[:m0]]
            pending = block if after_fill else pending + block
            text_cache = text_cache[m0:]
        while True:
            logits = decoder.feed(pending)
            if next_fill != -1 and len(out) == next_fill:
                token = fill
                next_fill += m1 + 1
            else:
                token = sample(logits, text_ended=False)
            if token == fill:
                next_fill = len(out) + m1 + 1
            out.append(token)
            if token == fill:
                break
            yield token
            emitted += 1
            if emitted >= max_len:
                return
            pending = [(SPEECH, token)]

    pending = pending + [(TEXT, t) for t in text_cache] + [(SPECIAL, TASK_ID)]
    while emitted < max_len:
        logits = decoder.feed(pending)
        token = sample(logits, text_ended=True)
        out.append(token)
        if token == eos:
            return
        yield token
        emitted += 1
        pending = [(SPEECH, token)]
