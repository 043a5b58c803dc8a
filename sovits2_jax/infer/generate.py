"""Autoregressive generation with a fixed-size KV cache: prefill + ``lax.while_loop`` decode in one jitted
function, for the speech LM (next speech token) and plain Qwen2 causal LMs (next text token).

- Rows are right-padded prompts with their own lengths; each row has its own min/max number of new tokens, its
  own eos stop and its own key (so a row's tokens do not depend on what else is in the batch).
- Shapes are bucketed (powers of two) so new prompt / output lengths reuse compiled code.
- ``stream`` runs the same step function in chunks and yields the new tokens of every row after each chunk;
  with the same keys it produces exactly what ``generate`` produces.
- A speech LM with several codebooks per frame (``num_codebooks`` K > 1) predicts a frame per step: codebook 0 is
  sampled as with one codebook (eos, min / max length, RAS), codebooks 1..K-1 from their heads with the same
  sampling settings but without RAS's repetition check or forbidden ids (their tables have no eos or fill rows);
  codebook j's draw at step i uses ``fold_in(step key, EXTRA_KEY + j)``. The summed embedding of the K codes is fed
  back, and tokens are [B, N, K] (-1 after each row's end). The prompt then holds ``codes_extra`` [B, P, K-1].
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.infer.sampling import SamplingConfig, sample_tokens
from sovits2_jax.models.qwen2 import KVCache, Qwen2ForCausalLM, init_cache
from sovits2_jax.models.speech_lm import SpeechLM
from sovits2_jax.text.layouts import PAD, cosyvoice2_prompt

RECENT = 16  # decoded tokens kept visible to RAS (>= its window)
EXTRA_KEY = 1 << 30  # fold_in offset of the extra codebooks' draws (far above sampling's trial numbers)


def bucket(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum, 1)
    return 1 << (n - 1).bit_length()


def fine_bucket(n: int, minimum: int = 16, per_octave: int = 8) -> int:
    """Smallest multiple of ``2**e / per_octave`` >= max(n, minimum), where ``2**e`` is the power of two just below:
    ``per_octave`` shapes per octave and at most ``1 / per_octave`` padding (a power of two pads 130 frames to 256;
    this pads them to 144). For the non-autoregressive passes, whose cost grows with every padded frame."""
    n = max(int(n), minimum, 1)
    step = 1 << max(0, (n - 1).bit_length() - 1 - (per_octave.bit_length() - 1))
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static decoding settings (part of the compiled function's identity)."""

    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    eos_id: int | None = None
    forbid_from: int | None = None  # ids >= this (except eos) are never produced (speech LM fill tokens)
    max_new: int = 64  # bucketed output capacity
    cache_len: int = 128


@dataclasses.dataclass
class Generation:
    """tokens [B, N] ([B, N, K] with K codebooks; -1 after each row's end), lengths [B], and whether each row
    stopped on eos."""

    tokens: np.ndarray
    lengths: np.ndarray
    hit_eos: np.ndarray

    def rows(self) -> list[list[int]]:
        return [self.tokens[b, : self.lengths[b]].tolist() for b in range(len(self.lengths))]


# ------------------------------------------------------------------------------------ model adapters


def _backbone(model):
    return model.llm.model if isinstance(model, SpeechLM) else model.model


def _num_extra(model) -> int:
    """Codebooks per frame beyond the first (0 for one codebook and for text LMs)."""
    return model.config.num_codebooks - 1 if isinstance(model, SpeechLM) else 0


def _embed_prompt(model, prompt: Mapping[str, jax.Array]) -> jax.Array:
    if isinstance(model, SpeechLM):
        return model.embed(prompt["kinds"], prompt["ids"], prompt.get("text_features"), prompt.get("codes_extra"))
    if isinstance(model, Qwen2ForCausalLM):
        return model.model.embed_tokens(prompt["ids"])
    raise TypeError(f"generation needs a SpeechLM or Qwen2ForCausalLM, got {type(model).__name__}")


def _embed_next(model, tokens: jax.Array) -> jax.Array:
    """tokens [B] (or [B, K]: codebook 0, then 1..K-1, -1 = none) -> [B, 1, D]."""
    if _num_extra(model):
        x = model.speech_embedding(tokens[:, 0])
        return (x + model.codebooks.embed(tokens[:, 1:]).astype(x.dtype))[:, None, :]
    table = model.speech_embedding if isinstance(model, SpeechLM) else model.model.embed_tokens
    return table(tokens)[:, None, :]


def _logits(model, hidden: jax.Array) -> jax.Array:
    if isinstance(model, SpeechLM):
        return model.llm_decoder(hidden)
    return model.logits(hidden)


def _extra_logits(model, hidden: jax.Array) -> jax.Array | None:
    """Codebooks 1..K-1's logits [B, K-1, V] (float32), None for one codebook."""
    return model.codebooks.logits(hidden).astype(jnp.float32) if _num_extra(model) else None


# ---------------------------------------------------------------------------------------- core steps


def _prefill(model, prompt, prompt_len, spec: DecodeSpec):
    x = _embed_prompt(model, prompt)
    backbone = _backbone(model)
    cache = init_cache(backbone.config, x.shape[0], spec.cache_len, x.dtype)
    segments = model.bidirectional_segments(prompt.get("text_segments")) if isinstance(model, SpeechLM) else None
    hidden, cache = backbone(inputs_embeds=x, cache=cache, bidirectional_segments=segments)
    prompt_len = prompt_len.astype(jnp.int32)
    # later writes go right after each row's own prompt; the padded tail is overwritten, never attended
    cache = KVCache(cache.k, cache.v, prompt_len)
    last = jnp.take_along_axis(hidden, (prompt_len - 1)[:, None, None], axis=1)[:, 0]
    return _logits(model, last).astype(jnp.float32), _extra_logits(model, last), cache


def _init_state(logits, extra_logits, cache, max_len, max_new: int):
    b = logits.shape[0]
    state = dict(
        step=jnp.int32(0),
        cache=cache,
        logits=logits,
        tokens=jnp.full((b, max_new), -1, jnp.int32),
        lengths=jnp.zeros((b,), jnp.int32),
        done=max_len <= 0,
        hit_eos=jnp.zeros((b,), bool),
    )
    if extra_logits is not None:
        state["extra_logits"] = extra_logits
        state["extra_tokens"] = jnp.full((b, max_new, extra_logits.shape[1]), -1, jnp.int32)
    return state


def _frames(state) -> jax.Array:
    """The state's tokens: [B, N], or [B, N, K] with extra codebooks."""
    if "extra_tokens" not in state:
        return state["tokens"]
    return jnp.concatenate([state["tokens"][..., None], state["extra_tokens"]], axis=-1)


def _forbidden(step, min_len, vocab: int, spec: DecodeSpec):
    ids = jnp.arange(vocab)
    never = jnp.zeros((vocab,), bool) if spec.forbid_from is None else ids >= spec.forbid_from
    if spec.eos_id is None:
        return jnp.broadcast_to(never, (min_len.shape[0], vocab))
    never = never & (ids != spec.eos_id)
    eos_now = (ids == spec.eos_id)[None, :] & (step < min_len)[:, None]
    return never[None, :] | eos_now


def _sample_extra(logits: jax.Array, step_keys: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """Codebooks 1..K-1 of a step [B, K-1] from their logits [B, K-1, V]: codebook j draws with the step keys
    folded with ``EXTRA_KEY + j``, without RAS's repetition check (no recent tokens) or forbidden ids."""
    out = []
    for j in range(1, logits.shape[1] + 1):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(step_keys, EXTRA_KEY + j)
        out.append(sample_tokens(logits[:, j - 1], keys, sampling))
    return jnp.stack(out, axis=1)


def _decode(model, state, keys, min_len, max_len, stop_step, spec: DecodeSpec):
    """Runs decode steps while step < stop_step and some row is unfinished."""
    backbone = _backbone(model)

    def cond(s):
        return (s["step"] < stop_step) & ~jnp.all(s["done"])

    def body(s):
        i = s["step"]
        vocab = s["logits"].shape[1]
        cols = s["lengths"][:, None] - RECENT + jnp.arange(RECENT)[None, :]
        recent = jnp.take_along_axis(s["tokens"], jnp.clip(cols, 0, spec.max_new - 1), axis=1)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        tok = sample_tokens(
            s["logits"],
            step_keys,
            spec.sampling,
            recent=recent,
            recent_valid=cols >= 0,
            forbidden=_forbidden(i, min_len, vocab, spec),
        )
        active = ~s["done"]
        is_eos = (tok == spec.eos_id) if spec.eos_id is not None else jnp.zeros_like(active)
        emit = active & ~is_eos
        tokens = s["tokens"].at[:, i].set(jnp.where(emit, tok, -1))  # an active row has exactly i tokens
        lengths = s["lengths"] + emit
        done = s["done"] | is_eos | (lengths >= max_len)
        fed = jnp.where(emit, tok, 0)
        new = {}
        if "extra_tokens" in s:
            extra = jnp.where(emit[:, None], _sample_extra(s["extra_logits"], step_keys, spec.sampling), -1)
            new["extra_tokens"] = s["extra_tokens"].at[:, i].set(extra)
            fed = jnp.concatenate([fed[:, None], extra], axis=1)
        hidden, cache = backbone(inputs_embeds=_embed_next(model, fed), cache=s["cache"])
        if "extra_tokens" in s:
            new["extra_logits"] = _extra_logits(model, hidden[:, 0])
        return dict(
            step=i + 1,
            cache=cache,
            logits=_logits(model, hidden[:, 0]).astype(jnp.float32),
            tokens=tokens,
            lengths=lengths,
            done=done,
            hit_eos=s["hit_eos"] | (active & is_eos),
            **new,
        )

    return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnames=("graphdef", "spec"))
def _generate_jit(graphdef, params, prompt, prompt_len, keys, min_len, max_len, *, spec: DecodeSpec):
    model = nnx.merge(graphdef, params)
    state = _init_state(*_prefill(model, prompt, prompt_len, spec), max_len, spec.max_new)
    state = _decode(model, state, keys, min_len, max_len, spec.max_new, spec)
    return _frames(state), state["lengths"], state["hit_eos"]


@functools.partial(jax.jit, static_argnames=("graphdef", "spec"))
def _prefill_jit(graphdef, params, prompt, prompt_len, max_len, *, spec: DecodeSpec):
    model = nnx.merge(graphdef, params)
    return _init_state(*_prefill(model, prompt, prompt_len, spec), max_len, spec.max_new)


@functools.partial(jax.jit, static_argnames=("graphdef", "spec"), donate_argnames=("state",))
def _decode_jit(graphdef, params, state, keys, min_len, max_len, stop_step, *, spec: DecodeSpec):
    return _decode(nnx.merge(graphdef, params), state, keys, min_len, max_len, stop_step, spec)


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_len"))
def _teacher_forced_jit(graphdef, params, prompt, prompt_len, tokens, *, cache_len: int):
    model = nnx.merge(graphdef, params)
    backbone = _backbone(model)
    first, first_extra, cache = _prefill(model, prompt, prompt_len, DecodeSpec(cache_len=cache_len))

    def step(cache, tok):
        hidden, cache = backbone(inputs_embeds=_embed_next(model, tok), cache=cache)
        return cache, (_logits(model, hidden[:, 0]).astype(jnp.float32), _extra_logits(model, hidden[:, 0]))

    _, (rest, rest_extra) = jax.lax.scan(step, cache, jnp.moveaxis(tokens, 1, 0))
    logits = jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)
    if first_extra is None:
        return logits
    return logits, jnp.concatenate([first_extra[:, None], jnp.moveaxis(rest_extra, 0, 1)], axis=1)


# ------------------------------------------------------------------------------------------- front end


def _prepare(prompt, prompt_len, key, min_len, max_len, sampling, eos_id, forbid_from, prompt_bucket):
    """Pads the prompt to its bucket and checks lengths and keys; returns the jit inputs and the DecodeSpec."""
    prompt = {k: np.asarray(v) for k, v in prompt.items()}
    b, p = prompt["ids"].shape
    prompt_len = np.asarray(prompt_len, np.int32).reshape(b)
    max_len = np.broadcast_to(np.asarray(max_len, np.int32), (b,))
    min_len = np.broadcast_to(np.asarray(min_len, np.int32), (b,))
    if prompt_len.min() < 1 or prompt_len.max() > p:
        raise ValueError(f"prompt lengths must be in [1, {p}], got {prompt_len.tolist()}")
    p_bucket = bucket(p, prompt_bucket)
    prompt = {
        k: np.pad(v, [(0, 0), (0, p_bucket - p)] + [(0, 0)] * (v.ndim - 2), constant_values=PAD if k == "kinds" else 0)
        for k, v in prompt.items()
    }
    max_new = bucket(int(max_len.max()), 16)
    spec = DecodeSpec(sampling, eos_id, forbid_from, max_new, p_bucket + max_new)
    keys = jax.random.split(key, b) if key.ndim == 0 else key
    if keys.shape != (b,):
        raise ValueError(f"expected one key or {b} keys, got key shape {keys.shape}")
    return prompt, prompt_len, keys, min_len, max_len, spec


def generate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompt: Mapping[str, np.ndarray],
    prompt_len: Sequence[int] | np.ndarray,
    key: jax.Array,
    *,
    max_len: int | Sequence[int],
    min_len: int | Sequence[int] = 0,
    sampling: SamplingConfig = SamplingConfig(),
    eos_id: int | None = None,
    forbid_from: int | None = None,
    prompt_bucket: int = 16,
) -> Generation:
    """Generates up to ``max_len`` new tokens per row (at least ``min_len`` before eos may end it).

    ``prompt``: {"kinds", "ids"[, "text_features", "text_segments"]} for a SpeechLM or {"ids"} for a
    Qwen2ForCausalLM, [B, P] right-padded, with ``prompt_len`` [B]. ``key``: one typed key or [B] per-row keys.
    """
    prompt, prompt_len, keys, min_len, max_len, spec = _prepare(
        prompt, prompt_len, key, min_len, max_len, sampling, eos_id, forbid_from, prompt_bucket
    )
    tokens, lengths, hit = _generate_jit(graphdef, params, prompt, prompt_len, keys, min_len, max_len, spec=spec)
    return Generation(np.asarray(tokens), np.asarray(lengths), np.asarray(hit))


def stream(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompt: Mapping[str, np.ndarray],
    prompt_len: Sequence[int] | np.ndarray,
    key: jax.Array,
    *,
    max_len: int | Sequence[int],
    min_len: int | Sequence[int] = 0,
    chunk: int = 25,
    sampling: SamplingConfig = SamplingConfig(),
    eos_id: int | None = None,
    forbid_from: int | None = None,
    prompt_bucket: int = 16,
) -> Iterator[tuple[list[list[int]], np.ndarray]]:
    """Like ``generate`` but yields (new tokens of each row, finished flags [B]) after every ``chunk`` steps."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    prompt, prompt_len, keys, min_len, max_len, spec = _prepare(
        prompt, prompt_len, key, min_len, max_len, sampling, eos_id, forbid_from, prompt_bucket
    )
    state = _prefill_jit(graphdef, params, prompt, prompt_len, max_len, spec=spec)
    sent = np.zeros(len(prompt_len), np.int64)
    step = 0
    while step < spec.max_new:
        step = min(step + chunk, spec.max_new)
        state = _decode_jit(graphdef, params, state, keys, min_len, max_len, jnp.int32(step), spec=spec)
        tokens, lengths, done = np.asarray(_frames(state)), np.asarray(state["lengths"]), np.asarray(state["done"])
        yield [tokens[b, sent[b] : lengths[b]].tolist() for b in range(len(sent))], done
        sent = lengths.astype(np.int64)
        if done.all():
            return


def cosyvoice2_batch(
    texts: Sequence[Sequence[int]],
    prompt_texts: Sequence[Sequence[int]] | None = None,
    prompt_speeches: Sequence[Sequence[int]] | None = None,
    *,
    min_ratio: float = 2.0,
    max_ratio: float = 20.0,
) -> dict[str, np.ndarray]:
    """Right-padded CosyVoice2 inference prompts and per-row limits: min/max new tokens are min_ratio /
    max_ratio times the length of the text to speak (without the prompt text), as ``Qwen2LM.inference``."""
    n = len(texts)
    prompt_texts = prompt_texts or [()] * n
    prompt_speeches = prompt_speeches or [()] * n
    pairs = [cosyvoice2_prompt(t, pt, ps) for t, pt, ps in zip(texts, prompt_texts, prompt_speeches)]
    lengths = np.asarray([len(k) for k, _ in pairs], np.int32)
    p = int(lengths.max())
    kinds = np.full((n, p), PAD, np.int32)
    ids = np.zeros((n, p), np.int32)
    for b, (k, i) in enumerate(pairs):
        kinds[b, : len(k)], ids[b, : len(i)] = k, i
    text_len = np.asarray([len(t) for t in texts])
    return dict(
        prompt={"kinds": kinds, "ids": ids},
        prompt_len=lengths,
        min_len=(text_len * min_ratio).astype(np.int32),
        max_len=(text_len * max_ratio).astype(np.int32),
    )


def speech_decode_kwargs(model_config) -> dict:
    """eos / forbidden ids for a SpeechLMConfig: stop on eos, never emit the fill tokens above it."""
    return dict(eos_id=model_config.eos_id, forbid_from=model_config.eos_id + 1)


def decode_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompt: Mapping[str, np.ndarray],
    prompt_len: Sequence[int] | np.ndarray,
    tokens: np.ndarray,
    *,
    prompt_bucket: int = 16,
) -> np.ndarray:
    """Teacher-forced decoding through the KV cache: logits [B, N + 1, V] after the prompt and after each of
    the given next tokens [B, N] (the same step function ``generate`` uses). With K codebooks, tokens are
    [B, N, K] and the result is (logits, the extra codebooks' logits [B, N + 1, K-1, V'])."""
    prompt, prompt_len, _, _, _, spec = _prepare(
        prompt,
        prompt_len,
        jax.random.key(0),
        0,
        tokens.shape[1],
        sampling=SamplingConfig(),
        eos_id=None,
        forbid_from=None,
        prompt_bucket=prompt_bucket,
    )
    out = _teacher_forced_jit(
        graphdef, params, prompt, prompt_len, jnp.asarray(tokens, jnp.int32), cache_len=spec.cache_len
    )
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)
