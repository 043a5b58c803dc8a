"""HuBERT: parity with transformers.HubertModel (random init, fp32 within 1e-4), the HF <-> Orbax converter (bit-exact
round trips in both weight-norm layouts, strict errors, atomic writes) and bucketed extraction."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax import parity
from sovits2_jax.convert import formats, hf_hubert
from sovits2_jax.convert.checkpoint import load_checkpoint
from sovits2_jax.convert.mapping import ConversionError, flatten
from sovits2_jax.convert.torch_io import iter_hf_weights, save_hf_weights
from sovits2_jax.models import hubert
from sovits2_jax.parity.compare import MODEL_ATOL
from sovits2_jax.parity.references.hubert import save_random_hf_hubert

pytestmark = pytest.mark.parity

# Shapes: the base layout in miniature (group norm, post-LN, even positional kernel), the same stored as
# chinese-hubert-base is (weight_g / weight_v in pytorch_model.bin), and a held-out "layer" variant (pre-LN, conv
# biases, odd positional kernel, uneven conv widths, no SpecAugment vector, tanh GELU in the layers).
SHAPES = {
    "base-group": (hubert.tiny(), False),
    "base-group-legacy-bin": (hubert.tiny(num_layers=1), True),
    "layer-stable-held-out": (
        hubert.tiny(
            conv_dim=(24, 24, 32, 32, 40, 40, 48),
            conv_bias=True,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            hidden_size=48,
            num_heads=6,
            num_layers=3,
            intermediate_size=80,
            num_conv_pos_embeddings=15,
            num_conv_pos_embedding_groups=3,
            masked_spec_embed=False,
            hidden_act="gelu_new",
        ),
        False,
    ),
}


def weights(directory):
    return dict(iter_hf_weights(directory))


def assert_bit_exact(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)), k


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_parity_with_transformers(name, tmp_path, torch_available):
    config, legacy = SHAPES[name]
    src = save_random_hf_hubert(tmp_path / "hf", config, seed=3, legacy=legacy)
    assert (src / "pytorch_model.bin").is_file() == legacy
    report = parity.run("hubert", str(src), seed=1, dump=tmp_path / "dump", report_path=tmp_path / "report.json")
    out = report["outputs"]["last_hidden_state"]
    print(f"{name}: max abs {out['max_abs']:.3e} (|ref| <= {out['ref_max_abs']:.3g})")
    assert out["ok"], f"max abs {out['max_abs']:.3e} above {report['atol']}"
    assert report["atol"] == MODEL_ATOL and out["ref_max_abs"] > 1e-1
    inputs = np.load(tmp_path / "dump" / "inputs.npz")
    assert inputs["input_values"].shape[1] >= 5 * 16000  # at least 5 s of audio
    assert inputs["attention_mask"].min() == 0  # the padded row is part of the comparison
    frames = hubert.output_lengths(config, inputs["attention_mask"].sum(-1))
    assert frames[0] >= 249 and frames[1] < frames[0]
    assert report["info"]["config"] == dataclasses.replace(config, dtype="float32").to_dict()


def test_detected_as_the_one_hubert_format(tmp_path, torch_available):
    src = save_random_hf_hubert(tmp_path / "hf", hubert.tiny(num_layers=1))
    assert formats.detect_format(src) is hf_hubert and hf_hubert.parts(src) == ("hubert",)
    dst = hf_hubert.torch_to_jax(src, tmp_path / "ours")
    assert formats.detect_format(dst).NAME == "orbax"
    params, config = hf_hubert.load_part(dst, "hubert")
    direct, config2 = hf_hubert.load_part(src, "hubert")
    assert config == config2 == hubert.tiny(num_layers=1)
    for k, v in flatten(direct).items():
        np.testing.assert_array_equal(flatten(params)[k], v, err_msg=k)
    state = weights(src)  # independently of the rule table: conv kernels [K, in, out], gains [K]
    np.testing.assert_array_equal(
        params["feature_extractor"]["conv_layers"][0]["conv"]["kernel"],
        state["feature_extractor.conv_layers.0.conv.weight"].transpose(2, 1, 0),
    )
    g = state["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
    np.testing.assert_array_equal(params["encoder"]["pos_conv"]["conv"]["g"], g.reshape(-1))
    with pytest.raises(ConversionError, match="holds no 'flow' part") as err:
        hf_hubert.load_part(src, "flow")
    assert str(src) in str(err.value)


@pytest.mark.parametrize(
    "dtype,legacy", [("float32", False), ("float32", True), ("bfloat16", False)], ids=["param-st", "legacy-bin", "bf16"]
)
def test_round_trip_bit_exact(dtype, legacy, tmp_path, torch_available):
    import transformers

    src = save_random_hf_hubert(tmp_path / "hf", hubert.tiny(num_layers=1), dtype=dtype, legacy=legacy)
    (src / "preprocessor_config.json").write_text('{"do_normalize": true, "sampling_rate": 16000}')
    hf_hubert.torch_to_jax(src, tmp_path / "jax")
    params, meta = load_checkpoint(tmp_path / "jax")
    assert meta["format"] == "hf_hubert" and meta["weight_norm_style"] == ("legacy" if legacy else "parametrizations")
    assert flatten(params)["encoder.layers.0.attention.query.kernel"].dtype.name == dtype
    back = hf_hubert.jax_to_torch(tmp_path / "jax", tmp_path / "back")
    assert (back / "pytorch_model.bin").is_file() == legacy and (back / "model.safetensors").is_file() != legacy
    assert_bit_exact(weights(src), weights(back))
    assert json.loads((back / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert (back / "preprocessor_config.json").read_text() == '{"do_normalize": true, "sampling_rate": 16000}'
    _, info = transformers.HubertModel.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_strict_errors_name_every_key(tmp_path, torch_available):
    src = save_random_hf_hubert(tmp_path / "hf", hubert.tiny(num_layers=2))
    state = weights(src)
    del state["encoder.layers.1.feed_forward.output_dense.bias"]
    state["encoder.layers.0.attention.extra_proj.weight"] = np.zeros((2, 2), np.float32)
    state["feature_extractor.conv_layers.3.conv.weight"] = np.zeros((5, 5, 3), np.float32)
    (src / "model.safetensors").unlink()
    save_hf_weights(state.items(), src)
    dst = tmp_path / "jax"
    with pytest.raises(ConversionError) as err:
        hf_hubert.torch_to_jax(src, dst)
    message = str(err.value)
    assert "missing" in message and "encoder.layers.1.feed_forward.output_dense.bias" in message
    assert "unexpected" in message and "encoder.layers.0.attention.extra_proj.weight" in message
    assert "mis-shaped" in message and "feature_extractor.conv_layers.3.conv.weight (3, 5, 5) != (3, 32, 32)" in message
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".jax")]


def test_bad_sources(tmp_path, torch_available):
    src = save_random_hf_hubert(tmp_path / "hf", hubert.tiny(num_layers=1))
    state = weights(src)
    # both weight-norm key styles at once: ambiguous
    g = state["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
    both = {**state, "encoder.pos_conv_embed.conv.weight_g": g.copy()}
    (src / "model.safetensors").unlink()
    save_hf_weights(both.items(), src)
    with pytest.raises(ConversionError, match="one weight-norm key style"):
        hf_hubert.torch_to_jax(src, tmp_path / "a")
    # another model type, and a HuBERT variant we do not implement
    hf = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**hf, "model_type": "wav2vec2"}))
    assert not hf_hubert.detect(src)
    with pytest.raises(ConversionError, match="wav2vec2"):
        hf_hubert.read_hf_config(src)
    (src / "config.json").write_text(json.dumps({**hf, "conv_pos_batch_norm": True}))
    with pytest.raises(ConversionError, match="conv_pos_batch_norm"):
        hf_hubert.torch_to_jax(src, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_base_preset_is_transformers_default(torch_available):
    import transformers

    default = transformers.HubertConfig().to_dict()
    assert hubert.HubertConfig.from_hf(default) == hubert.hubert_base()
    assert hubert.hubert_base().hop_length == 320 and hubert.hubert_base().min_samples == 400
    again = transformers.HubertConfig(**{k: v for k, v in hubert.hubert_base().to_hf().items() if k != "model_type"})
    assert hubert.HubertConfig.from_hf(again.to_dict()) == hubert.hubert_base()


def test_bucketed_extraction_equals_unpadded():
    """Rows of a padded bucket give what each row gives alone (the masked GroupNorm and attention; the "layer"
    variant's masked forward is transformers' own, checked by the parity test) and come back in input order."""
    config = hubert.tiny(num_layers=1)
    model = hubert.HubertModel(config, rngs=nnx.Rngs(5))
    rng = np.random.default_rng(0)
    lengths = [20811, 8000, 300, 12345]  # 1.3 s, 0.5 s, one too short for a frame, 0.77 s
    wavs = [rng.normal(0, 0.3, n).astype(np.float32) for n in lengths]
    extract = hubert.BucketedExtractor(model, batch_size=2, bucket_seconds=(1.0, 1.25), overflow_seconds=0.5)
    assert [extract.bucket_length(n) for n in (300, 16000, 16001, 20811)] == [16000, 16000, 20000, 24000]
    feats = extract(wavs)
    graphdef, state = nnx.split(model)
    alone = jax.jit(lambda s, w: nnx.merge(graphdef, s)(w))
    worst = 0.0
    for wav, f in zip(wavs, feats):
        assert f.shape == (hubert.output_lengths(config, len(wav)), config.hidden_size)
        if len(wav) >= config.min_samples:
            ref = np.asarray(alone(state, jnp.asarray(wav)[None]))[0]
            worst = max(worst, float(np.abs(f - ref).max()))
    print(f"bucketed vs unpadded max abs {worst:.3e}")
    assert worst <= MODEL_ATOL
    # the same padded row with its padding taken as real: the padding reaches the real frames (what lengths are for)
    padded = np.zeros((2, 16000), np.float32)
    padded[0, :8000] = wavs[1]
    unmasked = extract.forward(padded, np.full(2, 16000))[0, : feats[1].shape[0]]
    assert np.abs(unmasked - feats[1]).max() > 1e-3


def test_the_converter_command_writes_back(tmp_path, torch_available):
    """``python -m sovits2_jax.convert --src=<ours>``: the Orbax -> HF direction through the generic command."""
    import subprocess
    import sys

    src = save_random_hf_hubert(tmp_path / "hf", hubert.tiny(num_layers=1), legacy=True)
    hf_hubert.torch_to_jax(src, tmp_path / "jax")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sovits2_jax.convert",
            f"--src={tmp_path / 'jax'}",
            f"--dst={tmp_path / 'back'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "(hf_hubert, Orbax -> PyTorch)" in out.stdout
    assert_bit_exact(weights(src), weights(tmp_path / "back"))
