"""Qwen2 parity against transformers.Qwen2ForCausalLM (random init, fp32 logits within 1e-4)."""

import dataclasses

import numpy as np
import pytest

from sovits2_jax import parity
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.parity.random_reference import save_random_hf_qwen2

pytestmark = pytest.mark.parity

BASE = Qwen2Config(vocab_size=384, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2)
SHAPES = {
    "gqa2-untied-1e6": dict(tie_word_embeddings=False),
    "mha-tied-1e4": dict(num_kv_heads=4, tie_word_embeddings=True, rope_theta=1e4),
    "mqa-3layers-1e4": dict(num_layers=3, num_heads=8, num_kv_heads=1, hidden_size=128, rope_theta=1e4),
    "headdim-override": dict(head_dim=32, num_heads=2, num_kv_heads=1, tie_word_embeddings=False),
}


def _check(report):
    for key, out in report["outputs"].items():
        assert out["ok"], f"{key}: max abs {out['max_abs']:.3e} above {report['atol']}"
        # Tolerances are absolute; make sure the compared values are not vanishingly small.
        assert out["ref_max_abs"] > 1e-2, key


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_tiny_shapes(name, tmp_path, torch_available):
    config = dataclasses.replace(BASE, **SHAPES[name])
    src = save_random_hf_qwen2(tmp_path / "hf", config, seed=3)
    report = parity.run("qwen2", str(src), seed=1, dump=tmp_path / "dump", report_path=tmp_path / "report.json")
    _check(report)
    assert report["info"]["config"]["rope_theta"] == config.rope_theta
    inputs = np.load(tmp_path / "dump" / "inputs.npz")
    assert set(inputs.files) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape[1] >= 300
    assert inputs["attention_mask"].min() == 0  # padded rows are part of the comparison
    assert set(np.load(tmp_path / "dump" / "torch.npz").files) == set(np.load(tmp_path / "dump" / "jax.npz").files)


@pytest.mark.parametrize("switches", [dict(scan_layers=True), dict(remat_policy="dots", scan_layers=True)])
def test_scan_and_remat_match_reference(switches, tmp_path, torch_available):
    src = save_random_hf_qwen2(tmp_path / "hf", BASE, seed=4)
    case = parity.build_case("qwen2", str(src))
    from sovits2_jax.parity.references import qwen2 as parity_qwen2

    scanned = parity_qwen2.build(str(src), **switches)
    ref = case.run_torch(case.inputs)
    ours = scanned.run_jax(case.inputs)
    report = parity.compare_outputs(ref, ours, 1e-4, None)
    assert all(o["ok"] for o in report.values()), report


def test_real_qwen2_0_5b_shape(tmp_path, torch_available):
    """One forward at the real Qwen2-0.5B shape (24 layers, hidden 896, 14 heads, 2 KV heads, FFN 4864).

    The reference runs and is freed before our model is built, so the two 2 GB copies never coexist.
    """
    import gc

    import torch
    import transformers

    from sovits2_jax.parity.references import qwen2 as parity_qwen2

    config = Qwen2Config()  # defaults are Qwen2-0.5B
    src = save_random_hf_qwen2(tmp_path / "hf", config, seed=0)
    inputs = parity_qwen2.make_inputs(config.vocab_size, 1, 320, seed=0)
    ref = transformers.Qwen2ForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        out = ref(
            input_ids=torch.from_numpy(inputs["input_ids"]),
            attention_mask=torch.from_numpy(inputs["attention_mask"]),
            output_hidden_states=True,
        )
    expected = {"logits": out.logits.numpy(), "last_hidden": out.hidden_states[-1].numpy()}
    del ref, out
    gc.collect()

    case = parity_qwen2.build(str(src), batch=1, seq_len=320, with_reference=False)
    assert case.info["config"]["num_layers"] == 24 and case.info["config"]["vocab_size"] == 151936
    report = parity.compare_outputs(expected, case.run_jax(inputs), case.atol, None)
    for key, out in report.items():
        assert out["ok"], f"{key}: max abs {out['max_abs']:.3e}"
