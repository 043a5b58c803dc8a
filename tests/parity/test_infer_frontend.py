"""The inference frontend against cosyvoice's own: ``CosyVoiceFrontEnd``'s mode functions (feature extraction,
2:1 trim, model-input layout) on the same wav with the same ONNX models, ``text_normalize`` with wetext as its
normaliser, spk2info.pt read back by torch in CosyVoice's layout, and the LM tokens of zero_shot / cross_lingual /
instruct2 inputs against ``Qwen2LM.inference`` (greedy) from the same tiny weights.

What cannot be imported offline is stubbed with the real thing it stands for: ``whisper.log_mel_spectrogram`` with
s3tokenizer's copy of it, ``torchaudio.compliance.kaldi.fbank`` with kaldi-native-fbank, torchaudio's ``Resample``
with soxr (our resampler, so both sides see the same 24 kHz signal), and the reference's HF tokenizer with our
Qwen tokenizer (its ids are checked against HF's in test_tokenizer_reference.py).
"""

from __future__ import annotations

import dataclasses
import sys
import types

import jax
import numpy as np
import pytest

from sovits2_jax.audio.resample import resample
from sovits2_jax.infer import sampling as sampler
from sovits2_jax.infer.cosyvoice2.frontend import Frontend, FrontendError
from sovits2_jax.infer.cosyvoice2.inputs import ModelInput
from sovits2_jax.text import normalize as text_frontend
from sovits2_jax.text.tokenizer import get_tokenizer

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")


def _knf_fbank(wav, num_mel_bins=80, dither=0.0, sample_frequency=16000):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = dither
    opts.frame_opts.samp_freq = sample_frequency
    opts.mel_opts.num_bins = num_mel_bins
    online = knf.OnlineFbank(opts)
    online.accept_waveform(sample_frequency, wav[0].double().numpy().tolist())
    online.input_finished()
    return torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))


class _Resample:
    def __init__(self, orig_freq, new_freq):
        self.rates = orig_freq, new_freq

    def __call__(self, x):
        return torch.from_numpy(resample(x[0].numpy(), *self.rates))[None]


class _Tokenizer:
    def encode(self, text, allowed_special="all"):
        return get_tokenizer().encode(text)


@pytest.fixture(scope="module")
def reference_frontend(tiny_cosyvoice2_dir):
    """cosyvoice's CosyVoiceFrontEnd on the tiny model's ONNX models (its __init__ skipped: it opens a CUDA
    provider and loads the HF tokenizer), with wetext as its normaliser as when ttsfrd is absent."""
    import functools

    import inflect
    import onnxruntime
    import s3tokenizer.utils
    from wetext import Normalizer

    from sovits2_jax.parity.torch_refs import import_cosyvoice

    import_cosyvoice()
    ta = sys.modules["torchaudio"]
    ta.compliance = types.SimpleNamespace(kaldi=types.SimpleNamespace(fbank=_knf_fbank))
    ta.transforms = types.SimpleNamespace(Resample=_Resample)
    sys.modules.setdefault("torchaudio.compliance", ta.compliance)
    sys.modules.setdefault("torchaudio.compliance.kaldi", ta.compliance.kaldi)
    sys.modules.setdefault("whisper", types.SimpleNamespace(log_mel_spectrogram=s3tokenizer.utils.log_mel_spectrogram))
    from cosyvoice.cli import frontend as ref_frontend
    from matcha.utils.audio import mel_spectrogram

    ref = object.__new__(ref_frontend.CosyVoiceFrontEnd)
    ref.tokenizer = _Tokenizer()
    ref.allowed_special = "all"
    ref.device = torch.device("cpu")
    ref.feat_extractor = functools.partial(
        mel_spectrogram, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0,
        fmax=8000, center=False,
    )  # fmt: skip
    ref.campplus_session = onnxruntime.InferenceSession(str(tiny_cosyvoice2_dir / "campplus.onnx"))
    ref.speech_tokenizer_session = onnxruntime.InferenceSession(str(tiny_cosyvoice2_dir / "speech_tokenizer_v2.onnx"))
    ref.spk2info = {}
    ref.use_ttsfrd = False
    ref.zh_tn_model = Normalizer(lang="zh", operator="tn", remove_erhua=False, full_to_half=False)
    ref.en_tn_model = Normalizer(lang="en", operator="tn")
    ref.inflect_parser = inflect.engine()
    return ref


@pytest.fixture(scope="module")
def tts(tiny_cosyvoice2_dir):
    from sovits2_jax.infer.cosyvoice2.tts import TTS
    from sovits2_jax.infer.sampling import SamplingConfig

    return TTS.from_pretrained(tiny_cosyvoice2_dir, sampling=SamplingConfig(method="greedy"))


@pytest.fixture(scope="module")
def speech():
    """A real English utterance (espeak-ng) at its own rate and at 16 kHz."""
    from sovits2_jax.data.prep.espeak import Espeak

    engine = Espeak()
    wav = engine.synthesize("The wind carried the smell of pine trees down into the valley.", "en-us+f3")
    wav = wav.astype(np.float32) / 32768
    return wav, engine.sample_rate, resample(wav, engine.sample_rate, 16000)


def _np(x):
    return x.detach().cpu().numpy()[0] if x.ndim > 1 else x.detach().cpu().numpy()


def _assert_input_equals(ours: ModelInput, ref: dict):
    fields = ("text", "prompt_text", "llm_prompt_speech_token", "flow_prompt_speech_token")
    for name in fields:
        want = _np(ref[name]) if name in ref else np.zeros(0, np.int32)
        np.testing.assert_array_equal(getattr(ours, name), want, err_msg=name)
        if name in ref:
            assert int(ref[f"{name}_len"][0]) == len(getattr(ours, name)), name
    feat = _np(ref["prompt_speech_feat"])
    assert ours.prompt_speech_feat.shape == feat.shape and int(ref["prompt_speech_feat_len"][0]) == feat.shape[0]
    np.testing.assert_allclose(ours.prompt_speech_feat, feat, rtol=0, atol=1e-4)
    emb = _np(ref["flow_embedding"])
    np.testing.assert_allclose(ours.flow_embedding, emb, rtol=1e-4, atol=1e-4 * np.abs(emb).max())
    if "llm_embedding" in ref:
        np.testing.assert_allclose(ours.llm_embedding, _np(ref["llm_embedding"]), rtol=1e-4,
                                   atol=1e-4 * np.abs(emb).max())  # fmt: skip


def test_mode_inputs_equal_the_reference_frontend(reference_frontend, tts, speech):
    """Tokens (ONNX S3 tokenizer on whisper log-mel), embedding (ONNX on Kaldi fbank), 24 kHz mel, 2:1 trim and
    each mode's fields, from the same 16 kHz wav."""
    ref, f = reference_frontend, tts.frontend
    _, _, wav16k = speech
    t16 = torch.from_numpy(wav16k)[None]
    prompt = (wav16k, 16000)
    text, prompt_text, instruct = "Hello there, my friend.", "The wind carried the smell.", "Speak slowly."

    r = ref.frontend_zero_shot(text, prompt_text, t16, 24000, "")
    ours = f.zero_shot(text, prompt_text, prompt, normalize=False)
    assert len(ours.flow_prompt_speech_token) > 50 and ours.prompt_speech_feat.shape[0] % 2 == 0
    _assert_input_equals(ours, r)
    _assert_input_equals(f.cross_lingual(text, prompt), ref.frontend_cross_lingual(text, t16, 24000, ""))
    r = ref.frontend_instruct2(text, instruct, t16, 24000, "")
    _assert_input_equals(f.instruct2(text, instruct, prompt, normalize=False), r)
    r = ref.frontend_vc(t16[:, : 16000 * 2], t16, 24000)
    ours = f.vc((wav16k[: 16000 * 2], 16000), prompt)
    np.testing.assert_array_equal(ours.source_speech_token, _np(r["source_speech_token"]))
    # the reference's vc keeps the untrimmed prompt; ours is trimmed 2:1 like every other mode
    n = len(ours.flow_prompt_speech_token)
    np.testing.assert_array_equal(ours.flow_prompt_speech_token, _np(r["flow_prompt_speech_token"])[:n])
    np.testing.assert_allclose(ours.prompt_speech_feat, _np(r["prompt_speech_feat"])[: 2 * n], rtol=0, atol=1e-4)


def test_prompt_at_another_rate_is_resampled(tts, speech):
    wav, sr, _wav16k = speech
    assert sr != 16000
    ours = tts.frontend.prompt_features((wav, sr))
    direct = tts.frontend.speech_tokens(resample(wav, sr, 16000))
    n = len(ours.speech_token)
    np.testing.assert_array_equal(ours.speech_token, direct[:n])
    assert ours.speech_feat.shape == (2 * n, 80)


TEXTS = [
    "I have 3 cats and $5.50 on Jan 5, 2024. Dr. Smith said hi!",
    "今天是2024年1月5日，气温25℃。我们（一起）去【公园】散步吧，好不好，",
    "The quick brown fox jumps over the lazy dog. " * 12 + "Then it stopped",
    "他说：“今天天气很好。”然后就走了。" * 6,
]


@pytest.mark.parametrize("text", TEXTS)
def test_normalised_and_split_text_equals_the_reference(reference_frontend, text):
    tok = get_tokenizer()
    ours = text_frontend.normalize_and_split(text, tok.encode, list(tok.special_tokens))
    assert ours == reference_frontend.text_normalize(text, split=True, text_frontend=True)
    assert text_frontend.normalize(text) == reference_frontend.text_normalize(text, split=False, text_frontend=True)


def test_normalisation_is_wetexts_around_special_tokens():
    from wetext import Normalizer

    en = Normalizer(lang="en", operator="tn")
    text = "I counted 12 sheep [laughter] and then 3 more <strong>quickly</strong>.<|endofprompt|>"
    got = text_frontend.normalize(text, specials=list(get_tokenizer().special_tokens))
    want = (en.normalize("I counted 12 sheep") + " [laughter] " + en.normalize("and then 3 more") + " <strong>"
            + en.normalize("quickly") + "</strong>" + en.normalize(".") + "<|endofprompt|>")  # fmt: skip
    assert got == want and "twelve" in got
    ids = get_tokenizer().encode(got)
    for tag in ("[laughter]", "<strong>", "</strong>", "<|endofprompt|>"):
        assert get_tokenizer().token_id(tag) in ids


def test_long_text_is_split_not_truncated():
    tok = get_tokenizer()
    text = " ".join(f"word{i % 10}" for i in range(600))  # no sentence punctuation at all
    segments = text_frontend.normalize_and_split(text, tok.encode, lang="en")
    assert len(segments) > 3
    assert all(len(tok.encode(s)) <= text_frontend.HARD_MAX_FACTOR * text_frontend.TOKEN_MAX_N for s in segments)
    assert "".join(segments).replace(" ", "") == (text_frontend.normalize(text, "en") + ".").replace(" ", "")


def test_spk2info_round_trip_in_cosyvoice_layout(tts, speech, tmp_path, tiny_cosyvoice2_dir):
    from sovits2_jax.infer.cosyvoice2 import spk2info

    _, _, wav16k = speech
    assert tts.speakers == ["spk_a", "spk_b"]
    tts.add_speaker("zs", "The wind carried the smell.", (wav16k, 16000))
    path = tmp_path / "spk2info.pt"
    tts.save_speakers(path)
    raw = torch.load(path, weights_only=True)
    stored = tts.frontend.spk2info["zs"]
    assert set(raw["spk_a"]) == {"embedding"} and raw["spk_a"]["embedding"].shape == (1, 192)
    ref = torch.load(tiny_cosyvoice2_dir / "spk2info.pt", weights_only=True)
    assert torch.equal(raw["spk_a"]["embedding"], ref["spk_a"]["embedding"])
    keys = {"prompt_text", "llm_prompt_speech_token", "flow_prompt_speech_token", "prompt_speech_feat"}
    assert set(raw["zs"]) == keys | {k + "_len" for k in keys} | {"llm_embedding", "flow_embedding"}
    assert raw["zs"]["flow_prompt_speech_token"].dtype == torch.int32
    assert raw["zs"]["prompt_speech_feat"].shape == (1, 2 * len(stored.flow_prompt_speech_token), 80)
    assert int(raw["zs"]["prompt_speech_feat_len"][0]) == 2 * len(stored.flow_prompt_speech_token)
    back = spk2info.load(path)
    for name in ("prompt_text", "flow_prompt_speech_token", "prompt_speech_feat", "flow_embedding"):
        np.testing.assert_array_equal(getattr(back["zs"], name), getattr(stored, name))
    # a stored zero-shot speaker gives the same model input as its prompt
    again = tts.frontend.zero_shot("Hi.", "", spk_id="zs")
    np.testing.assert_array_equal(again.llm_prompt_speech_token, stored.llm_prompt_speech_token)
    with pytest.raises(FrontendError, match=r"unknown speaker id 'nope'; known speakers: spk_a, spk_b, zs"):
        tts.frontend.sft("Hi.", "nope")


def test_bad_prompts_are_rejected(tts):
    f: Frontend = tts.frontend
    rng = np.random.default_rng(0)
    with pytest.raises(FrontendError, match="longer than 30 s"):
        f.prompt_features(((0.1 * rng.standard_normal(16000 * 31)).astype(np.float32), 16000))
    with pytest.raises(FrontendError, match="silent"):
        f.prompt_features((np.zeros(16000, np.float32), 16000))
    with pytest.raises(FrontendError, match="unreadable audio"):
        f.prompt_features(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(FrontendError, match="empty"):
        f.split_text("   ")


def test_speed_change_is_offline_only(tts):
    """CosyVoice2 asserts when a speed change meets streaming; ours refuses before synthesising anything."""
    with pytest.raises(FrontendError, match="offline only"):
        tts.sft("Hello.", "spk_a", stream=True, speed=1.5)
    with pytest.raises(FrontendError, match="positive number"):
        tts.sft("Hello.", "spk_a", speed=0.0)


@pytest.fixture(scope="module")
def reference_lm(tiny_cosyvoice2_dir):
    """cosyvoice's ``Qwen2LM`` with the tiny model's weights (a test that edits it restores it)."""
    from sovits2_jax.parity.references import llm as parity_llm

    model_dir = tiny_cosyvoice2_dir
    config = parity_llm.read_model_dir(model_dir)
    ref = parity_llm.reference_model(config, model_dir / parity_llm.BLANK_EN)
    state = {k: v for k, v in torch.load(model_dir / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    ref.load_state_dict(state, strict=True)
    # Qwen2LM.inference passes a [1, 1] mask on cached steps; the installed transformers (5.x) does not read it as
    # "attend to every cached key" (its logits drift off full attention), so pass the full causal mask as
    # test_speech_lm does
    one_step = ref.llm.forward_one_step

    def full_mask_step(xs, masks, cache=None):
        n = xs.shape[1] + (0 if cache is None else cache.get_seq_length())
        return one_step(xs, torch.tril(torch.ones(1, n, n, dtype=torch.bool)), cache)

    ref.llm.forward_one_step = full_mask_step
    return ref.eval()


def _reference_greedy_tokens(ref, mi: ModelInput) -> list[int]:
    """``Qwen2LM.inference`` with the argmax over speech tokens and eos (eos excluded before min_len, which is what
    its retry loop converges to) in place of RAS."""
    eos = ref.speech_token_size
    min_len = 2 * len(mi.text)

    def greedy(scores, decoded, _):
        scores = scores[: eos + 1].clone()
        if len(decoded) < min_len:
            scores[eos] = -float("inf")
        return scores.argmax().reshape(1)

    ref.sampling = greedy
    return _reference_tokens(ref, mi)


def _reference_tokens(ref, mi: ModelInput) -> list[int]:
    """The tokens ``Qwen2LM.inference`` yields for one model input (its ``sampling`` as set by the caller)."""

    def t(x):
        return torch.from_numpy(np.asarray(x, np.int64))[None]

    return list(ref.inference(
        text=t(mi.text), text_len=torch.tensor([len(mi.text)]), prompt_text=t(mi.prompt_text),
        prompt_text_len=torch.tensor([len(mi.prompt_text)]), prompt_speech_token=t(mi.llm_prompt_speech_token),
        prompt_speech_token_len=torch.tensor([len(mi.llm_prompt_speech_token)]), embedding=torch.zeros(1, 0),
    ))  # fmt: skip


def _three_mode_rows(f: Frontend, speech) -> list[ModelInput]:
    """zero_shot, cross_lingual and instruct2 inputs with the first 2 s of the utterance as the prompt."""
    prompt = (speech[2][: 16000 * 2], 16000)
    return [
        f.zero_shot("Good morning.", "The wind carried the smell.", prompt),
        f.cross_lingual("Bonjour à tous.", prompt),
        f.instruct2("Speak like a pirate, matey.", "Speak happily.", prompt),
    ]


def test_lm_tokens_equal_qwen2lm_inference(tts, speech, reference_lm):
    """zero_shot, cross_lingual and instruct2 rows in one batched decode; each row equals the reference's."""
    rows = _three_mode_rows(tts.frontend, speech)
    assert rows[2].prompt_text[-1] == get_tokenizer().token_id("<|endofprompt|>")
    ours = tts.engine.speech_tokens(rows, seed=0)
    ref = reference_lm
    with torch.no_grad():
        for mi, got in zip(rows, ours):
            want = _reference_greedy_tokens(ref, mi)
            assert len(want) >= 2 * len(mi.text)
            assert got.tolist() == want


class _ReplayedDraws:
    """The reference's random draws replaced by ours at one row's decode. Each ``sampling_ids`` call is a decode
    step, each ``sampling`` call in it one draw (trial t of step i takes the uniforms of our key
    ``trial_key(fold_in(lm_key, i), t)``), and ``Tensor.multinomial`` returns the index our uniform selects from
    the weights torch passes (inverse CDF). So the nucleus cut, the repetition window, the full-distribution
    redraw and the eos retries are all cosyvoice's own code, fed our draws."""

    def __init__(self, ref, lm_key, config: sampler.SamplingConfig):
        from cosyvoice.llm.llm import Qwen2LM
        from cosyvoice.utils.common import ras_sampling

        self.ref, self.key, self.config = ref, lm_key, config
        self.qwen2lm_sampling_ids, self.ras_sampling = Qwen2LM.sampling_ids, ras_sampling
        self.step, self.trial, self.uniforms = -1, 0, []
        self.sizes: list[int] = []  # length of every vector drawn from (a nucleus, or the whole vocabulary)
        self.retries = 0  # eos drawn before min_len, drawn again

    def sampling_ids(self, scores, decoded, sampling, ignore_eos=True):
        self.step, self.trial = self.step + 1, 0
        return self.qwen2lm_sampling_ids(self.ref, scores, decoded, sampling, ignore_eos)

    def sampling(self, scores, decoded, sampling):
        step_key = jax.random.fold_in(self.key, self.step)  # generate's key of decode step i
        self.uniforms = np.asarray(sampler.draw_uniforms(sampler.trial_key(step_key, self.trial))).tolist()
        self.retries += self.trial > 0
        self.trial += 1
        c = self.config
        return self.ras_sampling(scores, decoded, sampling, top_p=c.top_p, top_k=c.top_k, win_size=c.win_size,
                                 tau_r=c.tau_r)  # fmt: skip

    def multinomial(self, weights, num_samples, replacement=False, **_):
        assert num_samples == 1 and weights.dim() == 1
        w = weights.detach().numpy().astype(np.float32)
        self.sizes.append(len(w))
        cdf = np.cumsum(w, dtype=np.float32)
        idx = int(np.searchsorted(cdf, np.float32(self.uniforms.pop(0)) * cdf[-1], side="right"))
        return torch.tensor([min(idx, int(np.flatnonzero(w > 0)[-1]))])


def _shaped_decoder(scale: float, eos_logit: float):
    """Edits the LM's output layer the same way on both sides: logits scaled (a peaked distribution, so top-p cuts
    the nucleus before top-k does at some steps), a fixed eos bias (eos comes out now and then: retries before
    min_len, stops after) and the fill tokens off (the reference skips a step on a fill token and re-feeds its last
    input; we never emit them, so a replay can only compare runs in which neither side can draw one)."""

    def torch_side(ref):
        eos = ref.speech_token_size
        with torch.no_grad():
            ref.llm_decoder.weight.mul_(scale)
            ref.llm_decoder.bias.mul_(scale)
            ref.llm_decoder.bias[eos] = eos_logit
            ref.llm_decoder.bias[eos + 1 :] = -1e4

    def jax_side(llm):
        from flax import nnx

        from sovits2_jax.parallel.sharding import split_params

        graphdef, params, cfg = llm
        model = nnx.merge(graphdef, params, copy=True)  # the shared fixture's weights stay as they are
        dec, eos = model.llm_decoder, cfg.speech_token_size
        dec.kernel[...] = dec.kernel[...] * np.float32(scale)
        bias = dec.bias[...] * np.float32(scale)
        dec.bias[...] = bias.at[eos].set(eos_logit).at[eos + 1 :].set(-1e4)
        return (*split_params(model), cfg)

    return torch_side, jax_side


RAS_SEED, DECODER_SCALE, EOS_LOGIT = 8, 6.0, 11.0


def test_lm_tokens_equal_qwen2lm_inference_with_ras(tts, speech, reference_lm, monkeypatch):
    """Our sampled decode (RAS with the model's top_p / top_k / win_size / tau_r, batched over the three modes) and
    ``Qwen2LM.inference`` with its own ``ras_sampling`` and ``sampling_ids``, fed our draws, give the same tokens;
    the run exercises the top-p cut, the top-k cut, the repetition redraw, eos retries (one where the first retry
    succeeds, so the retry's key matters) and eos stops. The seed has no step before min_len where eos alone fills
    the nucleus: there the reference gives up after 100 trials (RuntimeError) where we fall back to a draw without
    eos (test_sampling_reference.py compares that case)."""
    from sovits2_jax.infer.cosyvoice2.engine import Engine, EngineConfig, lm_key, row_keys

    config = dataclasses.replace(tts.files.sampling, method="ras")
    rows = _three_mode_rows(tts.frontend, speech)
    torch_side, jax_side = _shaped_decoder(DECODER_SCALE, EOS_LOGIT)
    engine = Engine(jax_side(tts.engine.llm), tts.engine.flow, tts.engine.hift, EngineConfig(sampling=config))
    ours = engine.speech_tokens(rows, seed=RAS_SEED)
    ref, saved = reference_lm, {k: v.clone() for k, v in reference_lm.llm_decoder.state_dict().items()}
    torch_side(ref)
    active: list[_ReplayedDraws] = []
    monkeypatch.setattr(torch.Tensor, "multinomial", lambda w, n, replacement=False: active[-1].multinomial(w, n))
    sizes, retries, stopped = [], 0, 0
    try:
        for mi, got, key in zip(rows, ours, row_keys(RAS_SEED, len(rows))):
            draws = _ReplayedDraws(ref, lm_key(key), config)
            active.append(draws)
            ref.sampling, ref.sampling_ids = draws.sampling, draws.sampling_ids
            want = _reference_tokens(ref, mi)
            assert got.tolist() == want
            sizes += draws.sizes
            retries += draws.retries
            stopped += len(want) < 20 * len(mi.text)
    finally:
        ref.llm_decoder.load_state_dict(saved)
        del ref.sampling_ids
    full = ref.speech_token_size + 3
    nucleus = [n for n in sizes if n < full]
    assert sum(n == full for n in sizes) > 0, "the repetition redraw must happen"
    assert any(n < config.top_k for n in nucleus) and any(n == config.top_k for n in nucleus), "top-p and top-k cuts"
    assert retries > 0 and stopped > 0, (retries, stopped)


def test_zero_shot_bistream_streams_audio_while_the_text_arrives(tts, speech):
    """TTS.zero_shot_bistream: text pieces are tokenized as they come and fed to the bistream decode; audio chunks
    come out before the last piece is read, and together equal the streaming token2wav of the same tokens."""
    from sovits2_jax.infer.bistream import bistream_generate
    from sovits2_jax.infer.cosyvoice2.engine import lm_key, row_keys

    wav, sr, _ = speech
    pieces = ["The wind ", "carried the ", "smell of ", "pine trees ", "down into ", "the quiet ", "green valley ",
              "below the ", "old stone ", "bridge."]  # fmt: skip
    consumed, first_chunk_after = [], None

    def text_stream():
        for piece in pieces:
            consumed.append(piece)
            yield piece

    chunks = []
    for chunk in tts.zero_shot_bistream(text_stream(), "A calm voice.", (wav, sr), seed=3, max_tokens=150):
        if first_chunk_after is None and len(chunk):
            first_chunk_after = len(consumed)
        chunks.append(chunk)
    assert first_chunk_after is not None and first_chunk_after < len(pieces)
    audio = np.concatenate(chunks)

    # the same decode driven by hand: the prompt as zero_shot builds it, each piece tokenized alone
    engine, frontend = tts.engine, tts.frontend
    prompt = frontend.zero_shot("", "A calm voice.", (wav, sr))
    graphdef, params, config = engine.llm
    key = row_keys(3, 1)[0]
    tokens = list(bistream_generate(graphdef, params, config, [frontend.text_ids(p) for p in pieces],
                                    prompt.prompt_text, prompt.llm_prompt_speech_token, lm_key(key),
                                    sampling=engine.config.sampling, max_len=150))  # fmt: skip
    assert len(tokens) > engine.config.token_hop  # several chunks' worth
    stream = engine._streamer(prompt, key, 150)
    whole = np.concatenate([*stream.push(tokens), stream.finish()])
    assert len(audio) == len(whole) == len(tokens) * 2 * 480  # token_mel_ratio 2, 480 samples per frame
    np.testing.assert_allclose(audio, whole, atol=1e-5)
