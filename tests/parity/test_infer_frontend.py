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

import sys
import types

import numpy as np
import pytest

from sovits2_jax.audio.resample import resample
from sovits2_jax.infer import text_frontend
from sovits2_jax.infer.frontend import Frontend, FrontendError
from sovits2_jax.infer.inputs import ModelInput
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
    from sovits2_jax.infer.sampling import SamplingConfig
    from sovits2_jax.infer.tts import TTS

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
    from sovits2_jax.infer import spk2info

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


def _reference_lm(model_dir):
    from sovits2_jax.parity.references import llm as parity_llm

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

    def t(x):
        return torch.from_numpy(np.asarray(x, np.int64))[None]

    return list(ref.inference(
        text=t(mi.text), text_len=torch.tensor([len(mi.text)]), prompt_text=t(mi.prompt_text),
        prompt_text_len=torch.tensor([len(mi.prompt_text)]), prompt_speech_token=t(mi.llm_prompt_speech_token),
        prompt_speech_token_len=torch.tensor([len(mi.llm_prompt_speech_token)]), embedding=torch.zeros(1, 0),
    ))  # fmt: skip


def test_lm_tokens_equal_qwen2lm_inference(tts, speech, tiny_cosyvoice2_dir):
    """zero_shot, cross_lingual and instruct2 rows in one batched decode; each row equals the reference's."""
    _, _, wav16k = speech
    f, prompt = tts.frontend, (wav16k[: 16000 * 2], 16000)
    rows = [
        f.zero_shot("Good morning.", "The wind carried the smell.", prompt),
        f.cross_lingual("Bonjour à tous.", prompt),
        f.instruct2("Speak like a pirate, matey.", "Speak happily.", prompt),
    ]
    assert rows[2].prompt_text[-1] == get_tokenizer().token_id("<|endofprompt|>")
    ours = tts.engine.speech_tokens(rows, seed=0)
    ref = _reference_lm(tiny_cosyvoice2_dir)
    with torch.no_grad():
        for mi, got in zip(rows, ours):
            want = _reference_greedy_tokens(ref, mi)
            assert len(want) >= 2 * len(mi.text)
            assert got.tolist() == want
