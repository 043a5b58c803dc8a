"""HF Qwen2 <-> Orbax conversion: bit-exact round trips, strict key errors, atomic writes, bad input."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sovits2_jax.convert import hf_qwen2
from sovits2_jax.convert.checkpoint import load_checkpoint
from sovits2_jax.convert.mapping import ConversionError, flatten
from sovits2_jax.convert.torch_io import iter_hf_weights, load_torch_state_dict, save_hf_weights, save_torch_state_dict
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.parity.random_reference import save_random_hf_qwen2

pytestmark = pytest.mark.parity

TINY = Qwen2Config(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    tie_word_embeddings=False,
)


def weights(directory):
    return dict(iter_hf_weights(directory))


def assert_bit_exact(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)), k


@pytest.mark.parametrize("dtype,tied", [("float32", False), ("bfloat16", False), ("float32", True)])
def test_round_trip_bit_exact(dtype, tied, tmp_path, torch_available):
    import transformers

    config = Qwen2Config(**{**TINY.to_dict(), "tie_word_embeddings": tied})
    src = save_random_hf_qwen2(tmp_path / "hf", config, dtype=dtype)
    (src / "tokenizer_config.json").write_text('{"model_max_length": 32768}')
    hf_qwen2.torch_to_jax(src, tmp_path / "jax")
    params, meta = load_checkpoint(tmp_path / "jax")
    assert meta["format"] == "hf_qwen2" and meta["config"]["num_layers"] == 2
    assert flatten(params)["model.layers.1.attention.query.kernel"].dtype.name == dtype  # dtypes preserved
    back = hf_qwen2.jax_to_torch(tmp_path / "jax", tmp_path / "back")
    assert_bit_exact(weights(src), weights(back))
    assert (back / "tokenizer_config.json").read_text() == '{"model_max_length": 32768}'
    _, info = transformers.Qwen2ForCausalLM.from_pretrained(back, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_sharded_safetensors_and_pytorch_bin(tmp_path, torch_available):
    src = save_random_hf_qwen2(tmp_path / "hf", TINY)
    original = weights(src)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(src / "config.json", sharded)
    names = save_hf_weights(original.items(), sharded, max_shard_bytes=40_000)
    assert len(names) > 1 and (sharded / "model.safetensors.index.json").is_file()
    binary = tmp_path / "bin"
    binary.mkdir()
    shutil.copy(src / "config.json", binary)
    save_torch_state_dict(original.items(), binary / "pytorch_model.bin")
    for d in (sharded, binary):
        hf_qwen2.torch_to_jax(d, tmp_path / f"jax-{d.name}")
        hf_qwen2.jax_to_torch(tmp_path / f"jax-{d.name}", tmp_path / f"back-{d.name}")
        assert_bit_exact(original, weights(tmp_path / f"back-{d.name}"))


def test_missing_extra_and_misshaped_keys_all_named(tmp_path, torch_available):
    src = save_random_hf_qwen2(tmp_path / "hf", TINY)
    state = weights(src)
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.extra_proj.weight"] = np.zeros((2, 2), np.float32)
    state["model.layers.0.mlp.down_proj.weight"] = np.zeros((5, 5), np.float32)
    (src / "model.safetensors").unlink()
    save_hf_weights(state.items(), src)
    dst = tmp_path / "jax"
    with pytest.raises(ConversionError) as err:
        hf_qwen2.torch_to_jax(src, dst)
    message = str(err.value)
    assert "model.layers.1.mlp.up_proj.weight" in message and "missing" in message
    assert "model.layers.0.self_attn.extra_proj.weight" in message and "unexpected" in message
    assert "model.layers.0.mlp.down_proj.weight (5, 5)" in message and "mis-shaped" in message
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".jax")]  # no half-written staging dir


def test_bad_inputs_give_one_clear_error(tmp_path, torch_available):
    # not a checkpoint
    (tmp_path / "notes").mkdir()
    for command in (["convert/torch_to_jax.py"], ["-m", "sovits2_jax.convert"]):  # the wrapper and the module
        out = subprocess.run(
            [sys.executable, *command, "--src", str(tmp_path / "notes"), "--dst", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1 and out.stderr.startswith(f"error: {tmp_path / 'notes'}: not a checkpoint of a")
        assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()

    # a checkpoint of another model type
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ConversionError, match="bert"):
        hf_qwen2.read_hf_config(other)

    # a truncated safetensors file
    src = save_random_hf_qwen2(tmp_path / "hf", TINY)
    blob = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConversionError, match=r"model\.safetensors"):
        hf_qwen2.torch_to_jax(src, tmp_path / "jax")
    assert not (tmp_path / "jax").exists()


def test_torch_state_dict_file_round_trip(tmp_path, torch_available):
    import ml_dtypes

    items = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, ml_dtypes.bfloat16)}
    save_torch_state_dict(items.items(), tmp_path / "x.pt", extra={"epoch": 3, "step": 10})
    loaded = load_torch_state_dict(tmp_path / "x.pt")
    assert set(loaded) == {"a.weight", "b"}  # non-tensor epoch/step are skipped
    assert_bit_exact(items, loaded)
