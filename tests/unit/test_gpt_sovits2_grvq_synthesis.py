"""GPT-SoVITS2 synthesis with an ssl_grvq VITS behind a K-codebook AR (sovits2_jax/infer/gpt_sovits2/tts.py): the
references' codes from their audio (tiny random HuBERT -> the VITS's VQ), the prompt's codes_extra, [N, K] frames
decoded from codes; mismatched codebooks refused. Tiny random-init models, torch-free."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs.vits2 import grvq_tiny, tiny
from sovits2_jax.infer.gpt_sovits2 import tts as gs2
from sovits2_jax.infer.sampling import SamplingConfig
from sovits2_jax.models import grvq, hubert
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.models.vits2 import SynthesizerTrn
from sovits2_jax.text import layouts

CODES = 64  # the tiny grvq VITS's codebook size, the AR's speech tokens
GREEDY = SamplingConfig(method="greedy")


class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [1 + ord(c) % 63 for c in text]


def _ar(k: int, speech: int = CODES) -> slm.SpeechLM:
    backbone = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    cfg = slm.SpeechLMConfig(backbone=backbone, speech_token_size=speech, layout="gpt_sovits2",
                             text_attention="bidirectional", num_codebooks=k)  # fmt: skip
    return slm.SpeechLM(cfg, rngs=nnx.Rngs(0))


def _vits(quantizers: int) -> tuple[SynthesizerTrn, dict]:
    """A tiny ssl_grvq VITS (2 groups x ``quantizers``) and random codebooks (kaiming-uniform, already initted)."""
    model = SynthesizerTrn(grvq_tiny(quantizers).replace(with_posterior=False, n_symbols=64), rngs=nnx.Rngs(1))
    config = dataclasses.replace(model.cfg.grvq_config(), kmeans_init=False)
    return model, grvq.state_to_dict(grvq.init_state(config, jax.random.key(3)))


@pytest.fixture(scope="module")
def encoder():
    return hubert.BucketedExtractor(hubert.HubertModel(hubert.tiny(), rngs=nnx.Rngs(2)), batch_size=2)


@pytest.fixture(scope="module")
def synth(encoder):
    vits, state = _vits(1)
    settings = gs2.SynthesisSettings(sampling=GREEDY, min_ratio=1.0, max_ratio=2.0)
    return gs2.GptSoVITS2.from_parts(_ar(2), vits, CharTokenizer(), settings, ssl_encoder=encoder, vq_state=state)


def _reference(seed: int, seconds: float = 0.5, text: str = "a reference", codes=None) -> gs2.Reference:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return gs2.Reference(wav.astype(np.float32), 16000, text, codes)


def test_references_codes_come_from_their_audio_and_prompt_the_ar(synth, encoder):
    """Each reference's [K, T] codes are its audio's HuBERT features (float16-rounded) through the VITS's VQ; the
    prompt's speech ids are codebook 0 and its codes_extra codebook 1, ending at each reference's eos."""
    refs = [_reference(0), _reference(1, 0.7, "second one")]
    codes = synth.ssl_codes([r.wav for r in refs])
    vits = nnx.merge(synth.vits_graphdef, synth.vits_params)
    for ref, got in zip(refs, codes):
        feats = encoder([ref.wav])[0].astype(np.float16).astype(np.float32)
        want = np.asarray(vits.extract_codes(jnp.asarray(feats[None]), synth.vq_state))[:, 0]
        assert got.shape == (2, len(feats) // 2) and len(np.unique(got)) > 1
        np.testing.assert_array_equal(got, want)
    _, inputs = synth.speech_tokens(["say this"], refs)
    prompt, n = inputs["prompt"], int(inputs["prompt_len"][0])
    speech = prompt["kinds"][0, :n] == layouts.SPEECH
    ids, extra = prompt["ids"][0, :n][speech], prompt["codes_extra"][0, :n][speech]
    want_ids = np.concatenate([np.append(c[0], CODES) for c in codes])  # each block ends with eos (= CODES)
    want_extra = np.concatenate([np.append(c[1], -1) for c in codes])  # the fed eos has no extra code
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(extra[:, 0], want_extra)


def test_synthesis_decodes_code_frames_and_follows_the_references_codes(synth):
    """Generation gives [N, 2] frames; vocode decodes them as codes [K, 1, N] with the VQ's codebooks; references
    given other codes (same audio) give other audio; explicit codes equal to the audio's give the same audio."""
    refs = [_reference(0), _reference(1, 0.7, "second one")]
    rows, inputs = synth.speech_tokens(["say this"], refs)
    frames = np.asarray(rows[0])
    assert frames.ndim == 2 and frames.shape[1] == 2 and frames.min() >= 0 and frames.max() < CODES
    wav = synth.synthesize("say this", refs, noise_scale=0.0)
    hop = synth.vits_config.hop_length
    assert wav.shape == (len(frames) * 2 * hop,) and np.isfinite(wav).all() and np.abs(wav).max() > 0
    vits = nnx.merge(synth.vits_graphdef, synth.vits_params)
    want = vits.decode(jnp.asarray(frames.T[:, None]), jnp.asarray(inputs["vits_text"][0][None]),
                       list(inputs["refers"]), 0.0, jax.random.key(0), vq_state=synth.vq_state)[0]  # fmt: skip
    np.testing.assert_allclose(wav, np.asarray(want), atol=1e-5)

    codes = synth.ssl_codes([r.wav for r in refs])
    given = [_reference(0, codes=codes[0]), _reference(1, 0.7, "second one", codes[1])]
    np.testing.assert_array_equal(synth.synthesize("say this", given, noise_scale=0.0), wav)
    rng = np.random.default_rng(7)
    other = [_reference(i, s, t, rng.integers(0, CODES, c.shape)) for i, s, t, c in
             zip((0, 1), (0.5, 0.7), ("a reference", "second one"), codes)]  # fmt: skip
    other_rows, _ = synth.speech_tokens(["say this"], other)
    assert not np.array_equal(np.asarray(other_rows[0]), frames)


def test_bad_codes_and_mismatched_models_are_refused(synth, encoder):
    with pytest.raises(gs2.SynthesisError, match=r"codes must be \[2, frames\]"):
        synth.speech_tokens(["hi"], [_reference(0, codes=np.zeros((4, 5), np.int32))])
    with pytest.raises(gs2.SynthesisError, match=r"codes must lie in \[0, 64\)"):
        synth.speech_tokens(["hi"], [_reference(0, codes=np.full((2, 5), CODES))])
    vits4, state4 = _vits(2)
    with pytest.raises(gs2.SynthesisError, match="AR predicts 2 codebooks per frame but the ssl_grvq VITS decodes 4"):
        gs2.GptSoVITS2.from_parts(_ar(2), vits4, CharTokenizer(), ssl_encoder=encoder, vq_state=state4)
    vits2, state2 = _vits(1)
    with pytest.raises(gs2.SynthesisError, match=r"hold \[32\] codes but the VITS's VQ codebooks hold 64"):
        gs2.GptSoVITS2.from_parts(_ar(2, speech=32), vits2, CharTokenizer(), vq_state=state2)
    with pytest.raises(gs2.SynthesisError, match="needs its codebooks"):
        gs2.GptSoVITS2.from_parts(_ar(2), vits2, CharTokenizer())
    tokens_vits = SynthesizerTrn(tiny().replace(with_posterior=False), rngs=nnx.Rngs(1))
    with pytest.raises(gs2.SynthesisError, match="a multi-codebook AR needs an ssl_grvq VITS"):
        gs2.GptSoVITS2.from_parts(_ar(2), tokens_vits, CharTokenizer())
    no_encoder = gs2.GptSoVITS2.from_parts(_ar(2), vits2, CharTokenizer(), vq_state=state2)
    with pytest.raises(gs2.SynthesisError, match="needs the SSL encoder"):
        no_encoder.speech_tokens(["hi"], [_reference(0)])
