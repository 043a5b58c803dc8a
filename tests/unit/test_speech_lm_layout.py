"""SpeechLM without torch: GPT-SoVITS2 packing, text features, losses, configs, generation from packed prompts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.infer import generate as gen
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.text import layouts
from sovits2_jax.validation import load_config

S, T, SP, PAD = layouts.SPECIAL, layouts.TEXT, layouts.SPEECH, layouts.PAD
TINY = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


@nnx.jit
def _run(model, *args, **inputs):
    """``model(*args, **inputs)`` compiled as one program per input shape (run eagerly, every op of the forward is
    compiled on its own for each shape)."""
    return model(*args, **inputs)


def test_gpt_sovits2_packing_by_hand():
    seq = layouts.gpt_sovits2_sequence([[1, 2], [3]], [[10, 11], [12, 13, 14]], speech_token_size=50)
    assert seq["kinds"].tolist() == [S, T, T, S, SP, SP, SP, T, S, SP, SP, SP]
    assert seq["ids"].tolist() == [0, 1, 2, 1, 10, 11, 50, 3, 1, 12, 13, 14]
    assert seq["targets"].tolist() == [-1] * 8 + [12, 13, 14, 50]
    assert seq["text_segments"].tolist() == [0, 1, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0]
    ref = layouts.gpt_sovits2_sequence(
        [[1, 2], [3]], [[10, 11], [12, 13, 14]], speech_token_size=50, loss_on_references=True
    )
    assert ref["targets"].tolist() == [-1, -1, -1, 10, 11, 50, -1, -1, 12, 13, 14, 50]


def test_gpt_sovits2_inference_prompt_is_the_training_prefix():
    texts, speeches = [[1, 2], [3, 4, 5], [6]], [[10], [11, 12], [13, 14]]
    train = layouts.gpt_sovits2_sequence(texts, speeches, speech_token_size=50)
    prompt = layouts.gpt_sovits2_sequence(texts, speeches[:-1], speech_token_size=50)
    n = len(prompt["kinds"])
    assert prompt["kinds"][-1] == S and prompt["ids"][-1] == layouts.TASK_ID
    for key in ("kinds", "ids", "text_segments"):
        np.testing.assert_array_equal(prompt[key], train[key][:n])
    assert (prompt["targets"] == -1).all()
    assert train["targets"][n - 1] == 13  # the last task_id predicts the first target speech token
    with pytest.raises(ValueError, match="speech blocks"):
        layouts.gpt_sovits2_sequence(texts, speeches[:1], speech_token_size=50)


def test_text_features_enter_only_at_text_positions_and_causally():
    config = slm.SpeechLMConfig(backbone=TINY, speech_token_size=20, layout="gpt_sovits2", text_feature_dim=8)
    model = slm.SpeechLM(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(2, 8)), rng.normal(size=(3, 8))]
    seq = layouts.gpt_sovits2_sequence([[1, 2], [3, 4, 5]], [[10, 11], [12]], speech_token_size=20, text_features=feats)
    batch = layouts.pad_batch([seq])
    assert batch["text_features"].shape == (1, len(seq["kinds"]), 8)

    def run(f):
        return np.asarray(model(batch["kinds"], batch["ids"], lengths=batch["lengths"], text_features=f))

    base = run(batch["text_features"])
    no_feat = np.asarray(model(batch["kinds"], batch["ids"], lengths=batch["lengths"]))
    assert not np.allclose(base, no_feat)
    f2 = batch["text_features"].copy()
    first_x2 = int(np.flatnonzero(seq["text_segments"] == 2)[0])
    f2[0, first_x2] += 1.0  # change a feature of the second text block
    changed = run(f2)
    np.testing.assert_allclose(changed[0, :first_x2], base[0, :first_x2], atol=1e-6)
    assert not np.allclose(changed[0, first_x2:], base[0, first_x2:])
    f3 = batch["text_features"].copy()
    f3[0, seq["kinds"] != T] = 100.0  # features on non-text positions are ignored
    np.testing.assert_allclose(run(f3), base, atol=1e-6)


def test_label_smoothing_loss_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = np.asarray([[1, -1, 3, 6, -1], [-1, -1, 0, 2, 2]])
    for smoothing, norm in ((0.0, True), (0.1, True), (0.2, False)):
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total, count = 0.0, 0
        for b in range(2):
            for t in range(5):
                if targets[b, t] < 0:
                    continue
                dist = np.full(7, smoothing / 6)
                dist[targets[b, t]] = 1 - smoothing
                nz = dist > 0
                total += (dist[nz] * (np.log(dist[nz]) - logp[b, t][nz])).sum()
                count += 1
        want = total / (count if norm else 2)
        got = slm.label_smoothing_loss(
            jnp.asarray(logits), jnp.asarray(targets), smoothing=smoothing, normalize_length=norm
        )
        np.testing.assert_allclose(got, want, rtol=1e-5)
    acc = slm.accuracy(jnp.asarray(logits), jnp.asarray(targets))
    hits = [(logits[b, t].argmax() == targets[b, t]) for b in range(2) for t in range(5) if targets[b, t] >= 0]
    np.testing.assert_allclose(acc, np.mean(hits))


def test_padding_does_not_change_loss():
    config = slm.SpeechLMConfig(backbone=TINY, speech_token_size=20, layout="gpt_sovits2")
    model = slm.SpeechLM(config, rngs=nnx.Rngs(1))
    seq = layouts.gpt_sovits2_sequence([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], speech_token_size=20)
    loss = nnx.jit(slm.lm_loss)  # one compiled program per batch shape
    short = loss(model, layouts.pad_batch([seq]))
    long = loss(model, layouts.pad_batch([seq], length=len(seq["kinds"]) + 9))
    np.testing.assert_allclose(short["loss"], long["loss"], rtol=1e-6)


def test_generation_from_packed_prompt_with_features():
    config = slm.SpeechLMConfig(backbone=TINY, speech_token_size=20, layout="gpt_sovits2", text_feature_dim=4)
    graphdef, params = nnx.split(slm.SpeechLM(config, rngs=nnx.Rngs(2)), nnx.Param)
    rng = np.random.default_rng(2)
    prompts = [
        layouts.gpt_sovits2_sequence(
            [[1, 2], [3]],
            [[10, 11]],
            speech_token_size=20,
            text_features=[rng.normal(size=(2, 4)), rng.normal(size=(1, 4))],
        ),
        layouts.gpt_sovits2_sequence(
            [[4], [5, 6, 7]],
            [[12]],
            speech_token_size=20,
            text_features=[rng.normal(size=(1, 4)), rng.normal(size=(3, 4))],
        ),
    ]
    batch = layouts.pad_batch(prompts)
    prompt = {k: batch[k] for k in ("kinds", "ids", "text_features")}
    out = gen.generate(
        graphdef,
        params,
        prompt,
        batch["lengths"],
        jax.random.key(0),
        min_len=3,
        max_len=12,
        **gen.speech_decode_kwargs(config),
    )
    assert all(3 <= len(r) <= 12 and all(0 <= t < 20 for t in r) for r in out.rows())


def test_configs_build_model_configs():
    for spec, layout in (
        ("configs/cosyvoice2.py:llm_tiny", "cosyvoice2"),
        ("configs/gpt_sovits2.py:ar_tiny", "gpt_sovits2"),
    ):
        cfg = load_config(spec)
        model_config = slm.SpeechLMConfig.from_dict(cfg.model.to_dict())
        assert model_config.layout == layout
        assert slm.SpeechLMConfig.from_dict(model_config.to_dict()) == model_config
    full = load_config("configs/cosyvoice2.py:llm")
    c = slm.SpeechLMConfig.from_dict(full.model.to_dict())
    assert (c.speech_token_size, c.backbone.hidden_size, c.backbone.num_layers) == (6561, 896, 24)
    assert (c.eos_id, c.fill_id, c.num_speech_rows) == (6561, 6563, 6564)
    with pytest.raises(ValueError, match="layout"):
        slm.SpeechLMConfig(layout="valle")
    with pytest.raises(ValueError, match="unknown SpeechLMConfig keys"):
        slm.SpeechLMConfig.from_dict({"speech_tokens": 3})


def test_bidirectional_text_blocks():
    texts, speeches = [[1, 2, 3], [4, 5]], [[10, 11], [12, 13]]
    seq = layouts.gpt_sovits2_sequence(texts, speeches, speech_token_size=20)
    batch = layouts.pad_batch([seq])
    changed = dict(batch)
    changed["ids"] = batch["ids"].copy()
    changed["ids"][0, 3] = 7  # last token of text block 1 (positions 1..3)
    outs = {}
    for mode in ("causal", "bidirectional"):
        config = slm.SpeechLMConfig(backbone=TINY, speech_token_size=20, layout="gpt_sovits2", text_attention=mode)
        model = slm.SpeechLM(config, rngs=nnx.Rngs(4))
        outs[mode] = [
            np.asarray(model(b["kinds"], b["ids"], lengths=b["lengths"], text_segments=b["text_segments"]))
            for b in (batch, changed)
        ]
    causal, bidir = outs["causal"], outs["bidirectional"]
    np.testing.assert_allclose(causal[0][0, :3], causal[1][0, :3], atol=1e-6)  # causal: the past cannot see it
    assert not np.allclose(bidir[0][0, 1:3], bidir[1][0, 1:3])  # bidirectional: the whole block sees it
    np.testing.assert_allclose(bidir[0][0, 0], bidir[1][0, 0], atol=1e-6)  # sos is outside the block
    with pytest.raises(ValueError, match="text_segments"):
        model(batch["kinds"], batch["ids"], lengths=batch["lengths"])


def test_bidirectional_cached_decode_equals_full_forward():
    config = slm.SpeechLMConfig(
        backbone=TINY, speech_token_size=20, layout="gpt_sovits2", text_attention="bidirectional"
    )
    graphdef, params = nnx.split(slm.SpeechLM(config, rngs=nnx.Rngs(5)), nnx.Param)
    texts, speeches = [[1, 2, 3], [4, 5, 6, 7]], [[10, 11, 12], [13, 14, 15, 16]]
    train = layouts.pad_batch([layouts.gpt_sovits2_sequence(texts, speeches, speech_token_size=20)])
    prompt = layouts.pad_batch([layouts.gpt_sovits2_sequence(texts, speeches[:1], speech_token_size=20)])
    p = int(prompt["lengths"][0])
    fed = train["ids"][:, p:]
    cached = gen.decode_logits(
        graphdef, params, {k: prompt[k] for k in ("kinds", "ids", "text_segments")}, prompt["lengths"], fed
    )
    full = np.asarray(
        _run(
            nnx.merge(graphdef, params),
            train["kinds"],
            train["ids"],
            lengths=train["lengths"],
            text_segments=train["text_segments"],
        )
    )
    np.testing.assert_allclose(cached[0], full[0, p - 1 :], atol=1e-5)


def test_packed_row_equals_separate_rows():
    config = slm.SpeechLMConfig(backbone=TINY, speech_token_size=20, layout="gpt_sovits2")
    model = slm.SpeechLM(config, rngs=nnx.Rngs(6))
    a = layouts.gpt_sovits2_sequence([[1, 2], [3]], [[10], [11, 12]], speech_token_size=20)
    b = layouts.gpt_sovits2_sequence([[4, 5, 6], [7]], [[13, 14], [15]], speech_token_size=20)
    na, nb = len(a["kinds"]), len(b["kinds"])
    kinds = np.concatenate([a["kinds"], b["kinds"]])[None]
    ids = np.concatenate([a["ids"], b["ids"]])[None]
    seg = np.asarray([1] * na + [2] * nb)[None]
    pos = np.concatenate([np.arange(na), np.arange(nb)])[None]
    packed = np.asarray(_run(model, kinds, ids, segment_ids=seg, positions=pos))
    sep = [np.asarray(_run(model, e["kinds"][None], e["ids"][None])) for e in (a, b)]
    np.testing.assert_allclose(packed[0, :na], sep[0][0], atol=1e-5)
    np.testing.assert_allclose(packed[0, na:], sep[1][0], atol=1e-5)
