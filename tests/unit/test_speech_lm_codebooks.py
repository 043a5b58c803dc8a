"""The GPT-SoVITS2 AR with several codebooks per frame (SpeechLMConfig.num_codebooks): one codebook builds the same
model as before; with K > 1 the input is the sum of the K code embeddings, the loss is the sum of the per-head CEs,
and cached generation predicts the frames a full forward pass argmaxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.data import packing
from sovits2_jax.infer import generate as gen
from sovits2_jax.infer.sampling import SamplingConfig
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.text import layouts
from sovits2_jax.text.layouts import IGNORE_ID, PAD, SPECIAL, SPEECH, TEXT
from sovits2_jax.train.families import gpt_sovits2_ar

SPEECH_TOKENS, EXTRA = 20, 12
BACKBONE = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
TEXTS = [[1, 2, 3], [4, 5]]
SPEECHES = [[10, 11, 12], [13, 14, 15, 16]]


def _config(k, **kw):
    return slm.SpeechLMConfig(backbone=BACKBONE, speech_token_size=SPEECH_TOKENS, layout="gpt_sovits2",
                              num_codebooks=k, extra_codebook_size=EXTRA if k > 1 else 0, **kw)  # fmt: skip


def _extra(speeches, k, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, EXTRA, size=(len(y), k - 1)).astype(np.int32) for y in speeches]


def _packed(rows, length=40, num_extra=0):
    batch = packing.pack_rows(rows, length, 0, num_extra)
    batch["valid"] = batch["num_segments"] > 0
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _ce(logits, targets):
    """Mean CE over targets != -1, in numpy."""
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != IGNORE_ID
    return -np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0][keep].mean()


def test_one_codebook_is_the_one_codebook_model():
    model = slm.SpeechLM(_config(1), rngs=nnx.Rngs(0))
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("codebooks" in n for n in names)
    assert {n for n in names if not n.startswith("llm/")} == {
        "llm_embedding/embedding", "speech_embedding/embedding", "llm_decoder/kernel", "llm_decoder/bias",
    }  # fmt: skip
    ex = layouts.gpt_sovits2_sequence(TEXTS, SPEECHES, speech_token_size=SPEECH_TOKENS)
    assert "codes_extra" not in ex and "targets_extra" not in ex
    batch = layouts.pad_batch([ex])
    kinds, ids = jnp.asarray(batch["kinds"]), jnp.asarray(batch["ids"])
    got = model(kinds, ids, lengths=jnp.asarray(batch["lengths"]))
    # the one-codebook forward as it was written before num_codebooks: embed by kind, backbone, llm_decoder
    text = model.llm.model.embed_tokens(jnp.where(kinds == TEXT, ids, 0))
    speech = model.speech_embedding(jnp.where(kinds == SPEECH, ids, 0))
    special = model.llm_embedding(jnp.where(kinds == SPECIAL, ids, 0))
    k = kinds[..., None]
    x = jnp.where(k == PAD, 0, jnp.where(k == TEXT, text, jnp.where(k == SPEECH, speech, special)))
    hidden, _ = model.llm.model(inputs_embeds=x, attention_mask=jnp.ones(kinds.shape, bool))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(model.llm_decoder(hidden)))


def test_extra_codebook_params_and_sequences():
    model = slm.SpeechLM(_config(3), rngs=nnx.Rngs(0))
    shapes = {n: v.value.shape for n, v in nnx.state(model.codebooks, nnx.Param).items()}
    assert shapes == {"embedding": (2, EXTRA, 32), "kernel": (2, 32, EXTRA), "bias": (2, EXTRA)}
    assert model.codebooks.embedding.logical_axes == ("codebooks", "speech_vocab", "embed")
    assert model.speech_embedding.embedding.shape == (SPEECH_TOKENS + 3, 32)  # codebook 0 keeps eos / fill rows
    ex = layouts.gpt_sovits2_sequence(
        [[1, 2], [3]], [[5, 6, 7], [8, 9]], speech_token_size=SPEECH_TOKENS,
        speech_extra=[np.asarray([[1, 2], [3, 4], [5, 6]]), np.asarray([[7, 8], [9, 10]])],
    )  # fmt: skip
    n = [-1, -1]
    # sos 1 2 task 5 6 7 eos | 3 task 8 9
    assert ex["codes_extra"].tolist() == [n, n, n, n, [1, 2], [3, 4], [5, 6], n, n, n, [7, 8], [9, 10]]
    assert ex["targets"].tolist() == [-1] * 9 + [8, 9, SPEECH_TOKENS]
    assert ex["targets_extra"].tolist() == [n] * 9 + [[7, 8], [9, 10], n]
    refs = layouts.gpt_sovits2_sequence(
        [[1, 2], [3]], [[5, 6, 7], [8, 9]], speech_token_size=SPEECH_TOKENS, loss_on_references=True,
        speech_extra=[np.asarray([[1, 2], [3, 4], [5, 6]]), np.asarray([[7, 8], [9, 10]])],
    )  # fmt: skip
    assert refs["targets_extra"].tolist() == [n, n, n, [1, 2], [3, 4], [5, 6], n, n, n, [7, 8], [9, 10], n]
    with pytest.raises(ValueError, match="num_codebooks=3 needs codes_extra"):
        model(jnp.asarray(ex["kinds"])[None], jnp.asarray(ex["ids"])[None])


@pytest.mark.parametrize("loss_on_references", [False, True])
def test_loss_is_the_sum_of_the_per_head_ce(loss_on_references):
    model = slm.SpeechLM(_config(3, loss_on_references=loss_on_references), rngs=nnx.Rngs(1))
    examples = [
        layouts.gpt_sovits2_sequence(TEXTS, SPEECHES, speech_token_size=SPEECH_TOKENS,
                                     speech_extra=_extra(SPEECHES, 3)),
        layouts.gpt_sovits2_sequence([[6, 7]], [[1, 2, 3, 4]], speech_token_size=SPEECH_TOKENS,
                                     speech_extra=_extra([[1, 2, 3, 4]], 3, seed=1)),
    ]  # fmt: skip
    batch = _packed([examples, []], num_extra=2)
    loss, aux = jax.jit(gpt_sovits2_ar.ar_loss)(model, batch)
    # by hand: the layout's own targets (with the reference blocks when trained on them), logits of each head
    want = [layouts.gpt_sovits2_sequence(TEXTS, SPEECHES, speech_token_size=SPEECH_TOKENS,
                                         speech_extra=_extra(SPEECHES, 3), loss_on_references=loss_on_references),
            layouts.gpt_sovits2_sequence([[6, 7]], [[1, 2, 3, 4]], speech_token_size=SPEECH_TOKENS,
                                         speech_extra=_extra([[1, 2, 3, 4]], 3, seed=1),
                                         loss_on_references=loss_on_references)]  # fmt: skip
    targets = np.asarray(_packed([want, []], num_extra=2)["targets"])
    targets_extra = np.asarray(_packed([want, []], num_extra=2)["targets_extra"])
    kw = dict(segment_ids=batch["segment_ids"], positions=batch["positions"], codes_extra=batch["codes_extra"])
    hidden = model.hidden(batch["kinds"], batch["ids"], **kw)
    logits, extra = np.asarray(model.logits(hidden)), np.asarray(model.extra_logits(hidden))
    per_head = [_ce(logits, targets), *(_ce(extra[:, :, j], targets_extra[..., j]) for j in range(2))]
    np.testing.assert_allclose(float(loss), sum(per_head), rtol=1e-5)
    for k, ce in enumerate(per_head):
        np.testing.assert_allclose(float(aux[f"loss_cb{k}"]), ce, rtol=1e-5)
    hits = np.argmax(extra[:, :, 1], -1) == targets_extra[..., 1]
    keep = targets_extra[..., 1] != IGNORE_ID
    np.testing.assert_allclose(float(aux["acc_cb2"]), hits[keep].mean(), rtol=1e-6)
    assert float(aux["weight"]) == (targets != IGNORE_ID).sum()
    # eos is scored by head 0 only
    assert (targets != IGNORE_ID).sum() == keep.sum() + (targets == SPEECH_TOKENS).sum()


def test_the_input_is_the_sum_of_the_code_embeddings():
    model = slm.SpeechLM(_config(3), rngs=nnx.Rngs(2))
    ex = layouts.gpt_sovits2_sequence(TEXTS, SPEECHES, speech_token_size=SPEECH_TOKENS,
                                      speech_extra=_extra(SPEECHES, 3))  # fmt: skip
    kinds, ids, codes = (jnp.asarray(ex[k])[None] for k in ("kinds", "ids", "codes_extra"))
    x = model.embed(kinds, ids, codes_extra=codes)
    p = int(np.flatnonzero(ex["kinds"] == SPEECH)[1])
    c = ex["codes_extra"][p]
    table = model.codebooks.embedding.value
    want = model.speech_embedding.embedding.value[ex["ids"][p]] + table[0, c[0]] + table[1, c[1]]
    np.testing.assert_allclose(np.asarray(x[0, p]), np.asarray(want), rtol=1e-6, atol=1e-7)
    base = model(kinds, ids, codes_extra=codes)
    changed = model(kinds, ids, codes_extra=codes.at[0, p, 1].set((c[1] + 1) % EXTRA))
    diff = np.abs(np.asarray(changed - base)).max(-1)[0]
    assert np.all(diff[:p] == 0) and np.all(diff[p:] > 1e-6)  # causal: from the changed frame on
    extra_changed = model.extra_logits(model.hidden(kinds, ids, codes_extra=codes.at[0, p, 0].set(-1)))
    assert np.abs(np.asarray(extra_changed - model.extra_logits(model.hidden(kinds, ids, codes_extra=codes)))).max() > 0


def test_greedy_generation_is_the_argmax_of_the_full_forward():
    k, n_new = 3, 6
    model = slm.SpeechLM(_config(k), rngs=nnx.Rngs(3))
    graphdef, params = nnx.split(model)
    prompt = layouts.gpt_sovits2_sequence(TEXTS, SPEECHES[:1], speech_token_size=SPEECH_TOKENS,
                                          speech_extra=_extra(SPEECHES[:1], k))  # fmt: skip
    p = len(prompt["kinds"])
    inputs = {key: prompt[key][None] for key in ("kinds", "ids", "codes_extra")}
    out = gen.generate(graphdef, params, inputs, [p], jax.random.key(0), max_len=n_new, min_len=n_new,
                       sampling=SamplingConfig(method="greedy"), **gen.speech_decode_kwargs(model.config))  # fmt: skip
    assert out.tokens.shape[0] == 1 and out.tokens.shape[2] == k and int(out.lengths[0]) == n_new
    frames = out.tokens[0, :n_new]
    assert np.all(frames >= 0) and np.all(frames[:, 0] < SPEECH_TOKENS)
    # the full sequence (prompt + generated frames) through the uncached forward
    kinds = np.concatenate([prompt["kinds"], np.full(n_new, SPEECH, np.int32)])[None]
    ids = np.concatenate([prompt["ids"], frames[:, 0]])[None]
    codes = np.concatenate([prompt["codes_extra"], frames[:, 1:]])[None]
    hidden = model.hidden(jnp.asarray(kinds), jnp.asarray(ids), codes_extra=jnp.asarray(codes))
    steps = hidden[0, p - 1 : p - 1 + n_new]
    logits = np.array(model.logits(steps))
    logits[:, SPEECH_TOKENS:] = -np.inf  # eos before min_len and the fill ids are never produced
    np.testing.assert_array_equal(frames[:, 0], logits.argmax(-1))
    np.testing.assert_array_equal(frames[:, 1:], np.asarray(model.extra_logits(steps)).argmax(-1))
    # the cached teacher-forced logits are the full forward's
    cached, cached_extra = gen.decode_logits(graphdef, params, inputs, [p], frames[None])
    np.testing.assert_allclose(cached[0, :n_new], np.asarray(model.logits(steps)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cached_extra[0, :n_new], np.asarray(model.extra_logits(steps)), rtol=1e-4, atol=1e-4)
    # streaming yields the same frames
    pieces = list(gen.stream(graphdef, params, inputs, [p], jax.random.key(0), max_len=n_new, min_len=n_new, chunk=4,
                             sampling=SamplingConfig(method="greedy"), **gen.speech_decode_kwargs(model.config)))
    assert [f for rows, _ in pieces for f in rows[0]] == frames.tolist()


def test_sampled_frames_stop_at_eos_and_stream_as_generated():
    k = 2
    model = slm.SpeechLM(_config(k), rngs=nnx.Rngs(4))
    graphdef, params = nnx.split(model)
    prompts = [layouts.gpt_sovits2_sequence(t, s, speech_token_size=SPEECH_TOKENS, speech_extra=_extra(s, k, seed=i))
               for i, (t, s) in enumerate([(TEXTS, SPEECHES[:1]), ([[7], [8, 9]], [[3, 4]])])]  # fmt: skip
    batch = layouts.pad_batch([{key: p[key] for key in ("kinds", "ids", "codes_extra")} for p in prompts])
    inputs = {key: batch[key] for key in ("kinds", "ids", "codes_extra")}
    kw = dict(max_len=[12, 7], sampling=SamplingConfig(method="random", temperature=1.5),
              **gen.speech_decode_kwargs(model.config))  # fmt: skip
    out = gen.generate(graphdef, params, inputs, batch["lengths"], jax.random.key(5), **kw)
    assert out.tokens.shape[2] == k
    for b, n in enumerate(out.lengths):
        assert np.all(out.tokens[b, :n] >= 0) and np.all(out.tokens[b, n:] == -1)
        assert np.all(out.tokens[b, :n, 1] < EXTRA) and np.all(out.tokens[b, :n, 0] < SPEECH_TOKENS)
    assert len({tuple(out.tokens[b, : out.lengths[b], 1]) for b in range(2)}) == 2
    pieces = list(gen.stream(graphdef, params, inputs, batch["lengths"], jax.random.key(5), chunk=3, **kw))
    assert [[f for rows, _ in pieces for f in rows[b]] for b in range(2)] == out.rows()


def test_synthesis_refuses_a_multi_codebook_ar():
    from sovits2_jax.configs import gpt_sovits2
    from sovits2_jax.infer.gpt_sovits2 import tts
    from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn

    vits = SynthesizerTrn(gpt_sovits2.vits_model("tiny"), rngs=nnx.Rngs(0))
    with pytest.raises(tts.SynthesisError, match="predicts 2 codebooks per frame"):
        tts.GptSoVITS2.from_parts(slm.SpeechLM(_config(2), rngs=nnx.Rngs(0)), vits, tokenizer=None)
