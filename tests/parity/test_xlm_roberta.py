"""XLM-RoBERTa (GPT-SoVITS2's BGE-M3 text encoder): parity with transformers.XLMRobertaModel (random init, fp32
within 1e-4 over >= 300 padded positions), HF <-> Orbax conversion (bit-exact, strict, atomic) and the bucketed
``encode`` helper."""

import dataclasses
import shutil

import numpy as np
import pytest
from flax import nnx

from sovits2_jax import parity
from sovits2_jax.convert import formats, hf_xlm_roberta
from sovits2_jax.convert.checkpoint import load_checkpoint
from sovits2_jax.convert.mapping import ConversionError, flatten
from sovits2_jax.convert.torch_io import iter_hf_weights, save_hf_weights, save_torch_state_dict
from sovits2_jax.models import xlm_roberta
from sovits2_jax.parity.references.xlm_roberta import save_random_hf_xlm_roberta

pytestmark = pytest.mark.parity

SHAPES = {
    "tiny-pooler": xlm_roberta.tiny(),
    # held out while writing the model: odd head count, 3 layers, two token types, tanh GELU, no pooler
    "held-out": xlm_roberta.tiny(
        hidden_size=48,
        num_heads=3,
        num_layers=3,
        intermediate_size=80,
        type_vocab_size=2,
        hidden_act="gelu_new",
        with_pooler=False,
        vocab_size=300,
    ),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_matches_transformers(name, tmp_path, torch_available):
    config = SHAPES[name]
    src = save_random_hf_xlm_roberta(tmp_path / "hf", config, seed=3)
    report = parity.run("xlm_roberta", str(src), seed=1, dump=tmp_path / "dump", report_path=None)
    expected = {"last_hidden", "pooler"} if config.with_pooler else {"last_hidden"}
    assert set(report["outputs"]) == expected
    for key, out in report["outputs"].items():
        assert out["ok"], f"{name} {key}: max abs {out['max_abs']:.3e} above {report['atol']}"
        assert out["ref_max_abs"] > 1e-2, key  # absolute tolerance on values that are not vanishingly small
    assert report["atol"] == 1e-4
    assert report["info"]["config"] == dataclasses.replace(config, dtype="float32").to_dict()
    inputs = np.load(tmp_path / "dump" / "inputs.npz")
    assert inputs["input_ids"].shape[1] >= 300
    assert inputs["attention_mask"].min() == 0 and len(set(inputs["attention_mask"].sum(1))) == 3  # padded rows
    assert ("token_type_ids" in inputs.files) == (config.type_vocab_size > 1)


# ------------------------------------------------------------------------------------------------------ conversion
def weights(directory):
    return dict(iter_hf_weights(directory))


def assert_bit_exact(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)), k


TINY = xlm_roberta.tiny(vocab_size=64, max_position_embeddings=40)


def test_round_trip_bit_exact_with_pooler(tmp_path, torch_available):
    import transformers

    src = save_random_hf_xlm_roberta(tmp_path / "hf", TINY, seed=1)
    (src / "tokenizer_config.json").write_text('{"model_max_length": 8192}')
    assert formats.detect_format(src) is hf_xlm_roberta
    dst = hf_xlm_roberta.torch_to_jax(src, tmp_path / "jax")
    assert formats.detect_format(dst).NAME == "orbax"  # our checkpoint is not mistaken for a HF directory
    params, meta = load_checkpoint(dst)
    assert meta["format"] == "hf_xlm_roberta" and meta["torch_prefix"] == "" and meta["config"]["with_pooler"]
    # independently of the rule table: embeddings as stored, linears transposed
    state = weights(src)
    flat = flatten(params)
    np.testing.assert_array_equal(flat["embeddings.word.embedding"], state["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(
        flat["layers.1.attention.key.kernel"], state["encoder.layer.1.attention.self.key.weight"].T
    )
    np.testing.assert_array_equal(flat["pooler.kernel"], state["pooler.dense.weight"].T)
    for source in (src, dst):  # the HF directory and our checkpoint read alike
        loaded, config = hf_xlm_roberta.load(source)
        assert config == TINY and sorted(flatten(loaded)) == sorted(flat)
        for k, v in flatten(loaded).items():
            np.testing.assert_array_equal(v, flat[k], err_msg=k)
    back = hf_xlm_roberta.jax_to_torch(dst, tmp_path / "back")
    assert_bit_exact(state, weights(back))
    assert (back / "tokenizer_config.json").read_text() == '{"model_max_length": 8192}'
    _, info = transformers.XLMRobertaModel.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_prefixed_bf16_bin_without_pooler_and_with_buffers(tmp_path, torch_available):
    """A ``roberta.``-prefixed pytorch_model.bin (bf16, no pooler, the old position_ids buffer) round-trips."""
    config = dataclasses.replace(TINY, with_pooler=False)
    hf = save_random_hf_xlm_roberta(tmp_path / "hf", config, seed=2, dtype="bfloat16")
    state = {f"roberta.{k}": v for k, v in weights(hf).items()}
    src = tmp_path / "bin"
    src.mkdir()
    shutil.copy(hf / "config.json", src)
    buffer = np.arange(config.max_position_embeddings, dtype=np.int64)[None]
    save_torch_state_dict([*state.items(), ("roberta.embeddings.position_ids", buffer)], src / "pytorch_model.bin")
    dst = hf_xlm_roberta.torch_to_jax(src, tmp_path / "jax")
    params, meta = load_checkpoint(dst)
    assert meta["torch_prefix"] == "roberta." and not meta["config"]["with_pooler"] and "pooler" not in params
    assert flatten(params)["layers.0.mlp.up.kernel"].dtype.name == "bfloat16"
    back = hf_xlm_roberta.jax_to_torch(dst, tmp_path / "back")
    assert_bit_exact(state, weights(back))  # the buffer is a constant: skipped, not written back


def test_missing_extra_and_misshaped_keys_all_named(tmp_path, torch_available):
    src = save_random_hf_xlm_roberta(tmp_path / "hf", TINY)
    state = weights(src)
    del state["encoder.layer.1.output.dense.bias"]
    del state["pooler.dense.bias"]  # half a pooler: its other half is missing, not silently dropped
    state["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2, 2), np.float32)
    state["lm_head.dense.weight"] = np.zeros((2, 2), np.float32)
    state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((5, 5), np.float32)
    (src / "model.safetensors").unlink()
    save_hf_weights(state.items(), src)
    dst = tmp_path / "jax"
    with pytest.raises(ConversionError) as err:
        hf_xlm_roberta.torch_to_jax(src, dst)
    message = str(err.value)
    assert "missing (2): " in message
    assert "encoder.layer.1.output.dense.bias" in message and "pooler.dense.bias" in message
    assert "unexpected (2): " in message and "rotary.weight" in message and "lm_head.dense.weight" in message
    assert "mis-shaped (1): encoder.layer.0.intermediate.dense.weight (5, 5)" in message
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".jax")]


def test_bad_sources(tmp_path, torch_available):
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    assert not hf_xlm_roberta.detect(other) and not hf_xlm_roberta.detect(tmp_path)
    with pytest.raises(ConversionError, match="bert"):
        hf_xlm_roberta.read_hf_config(other)
    src = save_random_hf_xlm_roberta(tmp_path / "hf", TINY)
    blob = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConversionError, match=r"model\.safetensors"):
        hf_xlm_roberta.torch_to_jax(src, tmp_path / "jax")
    assert not (tmp_path / "jax").exists()
    with pytest.raises(ConversionError, match="holds no 'flow' part"):
        hf_xlm_roberta.load_part(src, "flow")


# ------------------------------------------------------------------------------------------------ bucketed encode
def test_bucketed_encode_equals_unpadded_rows(monkeypatch):
    config = xlm_roberta.tiny(with_pooler=False)
    model = xlm_roberta.XLMRobertaModel(config, rngs=nnx.Rngs(5))
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(4, config.vocab_size, n - 2).tolist(), 2] for n in (5, 17, 40, 3, 6)]
    shapes = []
    forward = xlm_roberta._forward
    monkeypatch.setattr(
        xlm_roberta, "_forward", lambda g, p, ids, mask: shapes.append(ids.shape) or forward(g, p, ids, mask)
    )
    out = xlm_roberta.encode(model, rows, batch_size=2, buckets=(8, 32, 64))
    assert sorted(set(shapes)) == [(2, 8), (2, 32), (2, 64)] and len(shapes) == 4  # 5, 3, 6 -> 8; 17 -> 32; 40 -> 64
    for row, features in zip(rows, out):
        alone = np.asarray(model(np.asarray([row], np.int32)))[0]
        assert features.shape == (len(row), config.hidden_size)
        np.testing.assert_allclose(features, alone, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="row 0 has 65 tokens"):
        xlm_roberta.encode(model, [[0] * 65], buckets=(8, 32, 64))
    with pytest.raises(ValueError, match="row 1 has ids outside the model's vocabulary of 512"):
        xlm_roberta.encode(model, [[0, 2], [0, 512, 2]])


# BAAI/bge-m3's config.json
BGE_M3_HF = {
    "architectures": ["XLMRobertaModel"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "classifier_dropout": None, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 8194, "model_type": "xlm-roberta", "num_attention_heads": 16,
    "num_hidden_layers": 24, "output_past": True, "pad_token_id": 1, "position_embedding_type": "absolute",
    "torch_dtype": "float32", "type_vocab_size": 1, "use_cache": True, "vocab_size": 250002,
}  # fmt: skip


def test_bge_m3_preset_is_the_real_shape():
    from sovits2_jax.convert.mapping import expected_shapes

    config = xlm_roberta.XLMRobertaConfig.from_hf(BGE_M3_HF)
    assert config == xlm_roberta.bge_m3() and config.max_tokens == 8192 and config.head_size == 64
    assert xlm_roberta.XLMRobertaConfig.from_hf(config.to_hf()) == config
    shapes = expected_shapes(lambda: xlm_roberta.XLMRobertaModel(config, rngs=nnx.Rngs(0)))  # nothing allocated
    assert shapes["embeddings.position.embedding"] == (8194, 1024)
    assert shapes["layers.23.mlp.up.kernel"] == (1024, 4096)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    assert n_params == 567_754_752  # BGE-M3's 568M: XLM-R large with 8194 positions, and the pooler
    with pytest.raises(ValueError, match="relative_key"):
        xlm_roberta.XLMRobertaConfig.from_hf({**BGE_M3_HF, "position_embedding_type": "relative_key"})
