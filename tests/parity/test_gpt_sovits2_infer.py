"""GPT-SoVITS2 synthesis (sovits2_jax/infer/gpt_sovits2/tts.py) on tiny random models, and its VITS multi-reference
decode against upstream-era GPT-SoVITS v2 ``SynthesizerTrn.decode(codes, text, refer: list, ...)`` (the
gpt-sovits-cpufast wheel unpacked beside the venv) at the released s2 v2 sizes, every tensor perturbed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs.vits2 import gpt_sovits_v2, tiny
from sovits2_jax.data import packing
from sovits2_jax.infer import generate as gen
from sovits2_jax.infer.gpt_sovits2 import tts as gs2
from sovits2_jax.infer.sampling import SamplingConfig
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.models.vits2 import SynthesizerTrn
from sovits2_jax.text import layouts

ROOT = Path(__file__).resolve().parents[2]
V2_REFERENCE = ROOT / ".venv" / "refs" / "gpt-sovits-cpufast"
ATOL = 1e-4
GREEDY = SamplingConfig(method="greedy")
SPEECH = 64  # AR speech tokens; the tiny VITS embeds 64 + 3


class CharTokenizer:
    """Characters -> ids 1..63 (a stand-in BPE small enough for the tiny models' 64-row tables)."""

    def encode(self, text: str) -> list[int]:
        return [1 + ord(c) % 63 for c in text]


@pytest.fixture(scope="module")
def synth():
    backbone = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )
    ar_cfg = slm.SpeechLMConfig(
        backbone=backbone, speech_token_size=SPEECH, layout="gpt_sovits2", text_attention="bidirectional"
    )
    ar = slm.SpeechLM(ar_cfg, rngs=nnx.Rngs(0))
    vits = SynthesizerTrn(tiny().replace(with_posterior=False), rngs=nnx.Rngs(1))  # inference needs no enc_q
    settings = gs2.SynthesisSettings(sampling=GREEDY, min_ratio=1.0, max_ratio=3.0)
    return gs2.GptSoVITS2.from_parts(ar, vits, CharTokenizer(), settings)


def _reference(seed: int, seconds: float = 0.4, text: str = "a reference", sr: int = 16000) -> gs2.Reference:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    tokens = rng.integers(0, SPEECH, int(seconds * 25)).tolist()
    return gs2.Reference(wav.astype(np.float32), sr, text, tokens)


# ------------------------------------------------------------------------------------------ prompt layout


def test_inference_prompt_is_the_training_prefix(synth):
    """The AR's inference prompt for x1+y1+x2+y2+x -> y equals the training sequence of the same items as the
    data task packs it (second in a packed row), token for token, and the cached decode's logits equal the
    training forward's (segment ids, restarted positions, bidirectional text blocks) at every target step."""
    refs = [_reference(0, text="first one"), _reference(1, 0.6, text="second")]
    text, target = "say this", [5, 9, 2, 33, 17, 8]
    _, inputs = synth.speech_tokens([text], refs)
    tok = synth.tokenizer
    texts = [tok.encode(r.text) for r in refs] + [tok.encode(text)]
    speeches = [r.speech_tokens for r in refs] + [target]
    other = packing.gpt_sovits2_example([[3, 4]], [[1, 2, 3]], speech_token_size=SPEECH)
    example = packing.gpt_sovits2_example(texts, speeches, speech_token_size=SPEECH)
    row = packing.pack_rows([[other, example]], len(other["kinds"]) + len(example["kinds"]) + 5)
    at, n = len(other["kinds"]), int(inputs["prompt_len"][0])
    assert row["segment_ids"][0, at] == 2 and n < len(example["kinds"])
    for key in ("kinds", "ids"):
        np.testing.assert_array_equal(inputs["prompt"][key][0, :n], row[key][0, at : at + n])
    assert inputs["prompt"]["kinds"][0, n - 1] == layouts.SPECIAL and inputs["prompt"]["ids"][0, n - 1] == 1
    # text blocks: the same blocks (numbered through the row in training), the same non-text positions
    train_ts = row["text_segments"][0, at : at + n]
    ours_ts = inputs["prompt"]["text_segments"][0, :n]
    np.testing.assert_array_equal(ours_ts > 0, train_ts > 0)
    np.testing.assert_array_equal(np.unique(train_ts - ours_ts), [0, train_ts.max() - ours_ts.max()])
    np.testing.assert_array_equal(row["positions"][0, at : at + n], np.arange(n))  # what the KV cache prefill uses
    # the targets of training start at the last prompt position with the first target token
    np.testing.assert_array_equal(row["targets"][0, at + n - 1 : at + n - 1 + len(target) + 1], [*target, SPEECH])

    model = nnx.merge(synth.ar_graphdef, synth.ar_params)
    train_logits = model(
        jnp.asarray(row["kinds"]),
        jnp.asarray(row["ids"]),
        text_segments=jnp.asarray(row["text_segments"]),
        segment_ids=jnp.asarray(row["segment_ids"]),
        positions=jnp.asarray(row["positions"]),
    )
    want = np.asarray(train_logits)[0, at + n - 1 : at + n + len(target)]
    got = gen.decode_logits(
        synth.ar_graphdef, synth.ar_params, inputs["prompt"], inputs["prompt_len"], np.asarray([target])
    )[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a prompt without the references' eos separators (their code's train/infer mismatch) is seen differently
    wrong = {k: v.copy() for k, v in inputs["prompt"].items()}
    wrong["ids"][0, :n][(wrong["kinds"][0, :n] == layouts.SPEECH) & (wrong["ids"][0, :n] == SPEECH)] = 0
    bad = gen.decode_logits(synth.ar_graphdef, synth.ar_params, wrong, inputs["prompt_len"], np.asarray([target]))
    assert np.abs(bad[0] - want).max() > 1e-3


# ------------------------------------------------------------------------------------ multi-reference VITS


def _import_v2_reference():
    """gpt-sovits-cpufast's upstream-era ``module.models`` (the real v2 SynthesizerTrn with list references)."""
    if not (V2_REFERENCE / "GPT_SoVITS" / "module" / "models.py").is_file():
        pytest.fail(
            f"{V2_REFERENCE} is missing: .venv/bin/python -m pip install --no-deps --target {V2_REFERENCE} "
            "gpt-sovits-cpufast==0.1.0"
        )
    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    sys.path[:0] = [str(V2_REFERENCE / "GPT_SoVITS"), str(V2_REFERENCE)]
    try:
        return importlib.import_module("module.models")
    finally:
        del sys.path[:2]


@pytest.fixture(scope="module")
def v2_pair():
    torch = pytest.importorskip("torch")
    from sovits2_jax.parity.references import vits as parity_vits

    models = _import_v2_reference()
    cfg = gpt_sovits_v2()
    torch.manual_seed(0)
    ref = models.SynthesizerTrn(**parity_vits.torch_kwargs(cfg), version="v2")
    parity_vits.perturb_(ref, 1)
    for layer in ref.quantizer.vq.layers:  # as in released files (0 would k-means re-init on the first call)
        layer._codebook.inited.fill_(1.0)
    ref.eval()
    graphdef, params = parity_vits.ours_from_torch(cfg, parity_vits.torch_state(ref))
    return torch, cfg, ref, graphdef, params


@pytest.mark.parity
def test_multi_reference_decode_matches_gpt_sovits_v2(v2_pair):
    torch, cfg, ref, graphdef, params = v2_pair
    rng = np.random.default_rng(3)
    codes = rng.integers(0, cfg.codebook_size, (1, 1, 12))
    text = rng.integers(0, cfg.n_symbols, (1, 9))
    # three references of different lengths and spectral envelopes, so their style vectors differ
    bins = np.arange(cfg.spec_channels)[None, :, None] / cfg.spec_channels
    specs = [
        (np.abs(rng.standard_normal((1, cfg.spec_channels, n))) * (1 + 3 * i) * np.exp(-4 * i * bins)).astype(
            np.float32
        )
        for i, n in enumerate((37, 52, 29))
    ]
    with torch.no_grad():
        want = ref.decode(
            torch.from_numpy(codes), torch.from_numpy(text), [torch.from_numpy(s) for s in specs], noise_scale=0.0
        ).numpy()[:, 0]
    refers = tuple(jnp.asarray(s.transpose(0, 2, 1)) for s in specs)
    got = gs2.decode_fused(
        graphdef,
        params,
        jnp.asarray(codes, jnp.int32),
        jnp.asarray(text, jnp.int32),
        refers,
        jnp.float32(0.0),
        jax.random.key(0),
    )
    assert got.shape == want.shape
    assert np.abs(np.asarray(got) - want).max() <= ATOL
    # the fused style vector is the reference's mean, and the other references really move it
    with torch.no_grad():
        ge_want = ref.build_decode_condition([torch.from_numpy(s) for s in specs])[0].numpy()
        ge_single = ref.build_decode_condition([torch.from_numpy(specs[0])])[0].numpy()
    fused = jax.jit(lambda p, rs: nnx.merge(graphdef, p).fused_style(list(rs)))(params, refers)
    assert np.abs(np.asarray(fused).transpose(0, 2, 1) - ge_want).max() <= 1e-5
    assert np.abs(ge_want - ge_single).max() > 1e-2


# ------------------------------------------------------------------------------------------------- fusion


def _vocode_inputs(synth):
    """A reference spectrogram [1, T, bins], 15 speech tokens and 8 text ids (shared: one compiled decode)."""
    r = _reference(4)
    spec = jnp.asarray(gs2.reference_spectrogram(r.wav, r.sample_rate, synth.vits_config))[None]
    return spec, np.random.default_rng(6).integers(0, SPEECH, 15), np.arange(1, 9)


def test_fusion_averages_style_vectors(synth):
    r1, tokens, text = _vocode_inputs(synth)
    r2 = jnp.asarray(gs2.reference_spectrogram(_reference(5, 0.7).wav, 16000, synth.vits_config))[None]

    @jax.jit
    def styles(params, r1, r2):
        vits = nnx.merge(synth.vits_graphdef, params)
        return vits.style(r1), vits.style(r2), vits.fused_style([r1, r1, r1]), vits.fused_style([r1, r2])

    g1, g2, g111, g12 = (np.asarray(g) for g in styles(synth.vits_params, r1, r2))
    assert np.abs(g1 - g2).max() > 1e-2
    np.testing.assert_allclose(g111, g1, atol=1e-6)
    np.testing.assert_allclose(g12, (g1 + g2) / 2, atol=1e-6)
    one = synth.vocode(tokens, text, [r1], noise_scale=0.0)
    np.testing.assert_allclose(synth.vocode(tokens, text, [r1, r1, r1], noise_scale=0.0), one, atol=1e-6)


def test_speed_scales_the_output_length(synth):
    refer, tokens, text = _vocode_inputs(synth)
    hop = synth.vits_config.hop_length
    base = synth.vocode(tokens, text, [refer], noise_scale=0.0).size
    assert base == 2 * len(tokens) * hop
    for speed in (2.0, 0.5):
        n = synth.vocode(tokens, text, [refer], speed=speed, noise_scale=0.0).size
        assert n == (int(2 * len(tokens) / speed) + 1) * hop
        assert abs(n / base - 1 / speed) <= hop / base + 1e-9


# ----------------------------------------------------------------------------------------------- end to end


def test_end_to_end_greedy_is_deterministic_and_batches(synth):
    refs = [_reference(8, text="hello there"), _reference(9, 0.5, text="more words", sr=22050)]
    texts = ["the first sentence", "second"]
    a = synth.synthesize(texts[0], refs, seed=3, noise_scale=0.5)
    b = synth.synthesize(texts[0], refs, seed=3, noise_scale=0.5)
    assert a.dtype == np.float32 and a.ndim == 1 and a.size > 0 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    rows, _ = synth.speech_tokens(texts, refs, seed=3)
    assert a.size == 2 * len(rows[0]) * synth.vits_config.hop_length
    assert np.abs(synth.synthesize(texts[0], refs, seed=4, noise_scale=0.5) - a).max() > 1e-4  # the seed is used
    # batched: each row equals that text run alone (greedy tokens; row 0 shares the single run's keys)
    batch = synth.synthesize_batch(texts, refs, seed=3, noise_scale=0.5)
    np.testing.assert_allclose(batch[0], a, atol=1e-6)
    alone, _ = synth.speech_tokens([texts[1]], refs, seed=3)
    assert rows[1] == alone[0]
    assert len(rows[0]) >= len(synth.tokenizer.encode(texts[0]))  # min_ratio 1


@pytest.mark.parametrize(
    "texts, refs, message",
    [
        (["hi"], [], "at least one reference"),
        (["  "], "ok", "text is empty"),
        (["hi"], [gs2.Reference(np.zeros(8000, np.float32), 16000, "", [1, 2])], "reference 0's text is empty"),
        (["hi"], [gs2.Reference(np.ones(8000, np.float32), 16000, "ref", None)], "no speech tokens"),
        (["hi"], [gs2.Reference(np.ones(8000, np.float32), 16000, "ref", [SPEECH])], "speech tokens must be"),
        (["hi"], [gs2.Reference(np.ones(10, np.float32), 16000, "ref", [1])], "too short"),
    ],
)
def test_bad_input_gets_one_clear_error(synth, texts, refs, message):
    if refs == "ok":
        refs = [_reference(0)]
    with pytest.raises(gs2.SynthesisError, match=message):
        synth.synthesize(texts[0], refs)


def test_loads_from_orbax_checkpoints(synth, tmp_path):
    """``from_pretrained`` reads both parts from our Orbax checkpoints (a directory with ar/ and vits/)."""
    from sovits2_jax.convert.checkpoint import save_checkpoint
    from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten

    for name, params, cfg, fmt in (
        ("ar", synth.ar_params, synth.ar_config, "cosyvoice2.llm"),
        ("vits", synth.vits_params, synth.vits_config, "gpt_sovits"),
    ):
        flat = {k: np.asarray(v) for k, v in flatten(nnx.to_pure_dict(params)).items()}
        save_checkpoint(tmp_path / name, unflatten(flat), {"format": fmt, "config": cfg.to_dict()})
    loaded = gs2.GptSoVITS2.from_pretrained(tmp_path, tokenizer=CharTokenizer(), settings=synth.settings)
    assert (loaded.ar_config, loaded.vits_config) == (synth.ar_config, synth.vits_config)
    for got, want in ((loaded.ar_params, synth.ar_params), (loaded.vits_params, synth.vits_params)):
        got, want = flatten(nnx.to_pure_dict(got)), flatten(nnx.to_pure_dict(want))
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    with pytest.raises(ConversionError, match="no such file"):
        gs2.GptSoVITS2.from_pretrained(tmp_path / "missing")
