"""Test set-up: 8 simulated CPU devices (for mesh tests), float32 everywhere, quiet logs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.util

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config, items):
    gpu = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu is None:
                import jax

                gpu = any(d.platform == "gpu" for d in jax.devices())
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def torch_available():
    if not _has("torch"):
        pytest.skip("the parity extra (torch) is not installed")
    return True


TINY_FLOW_YAML = """
flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    vocab_size: 6561
    spk_embed_dim: 192
    token_mel_ratio: 2
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        num_blocks: 1
        linear_units: 256
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            channels: [64]
            attention_head_dim: 32
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
"""


@pytest.fixture(scope="session")
def tiny_cosyvoice2_dir(tmp_path_factory, torch_available):
    """A complete random-init CosyVoice2 model directory with the real vocabularies (every Qwen2 text id, 6561
    speech tokens) and tiny widths: cosyvoice2.yaml, llm.pt, flow.pt, hift.pt, CosyVoice-BlankEN/, an S3-v2
    speech tokenizer and a campplus-like speaker model (ONNX), spk2info.pt with two sft speakers."""
    import dataclasses

    import torch

    from sovits2_jax.convert import cosyvoice2, cosyvoice2_flow, cosyvoice2_hift
    from sovits2_jax.parity.reference_models import export_campplus_like, export_s3_tokenizer
    from sovits2_jax.parity.references import flow as parity_flow
    from sovits2_jax.parity.references import hift as parity_hift
    from sovits2_jax.parity.references import llm as parity_llm

    root = tmp_path_factory.mktemp("cosyvoice2") / "CosyVoice2-tiny"
    backbone = dataclasses.replace(parity_llm.TINY_BACKBONE, vocab_size=151936)
    parity_llm.write_tiny_model_dir(root, seed=0, backbone=backbone, speech_token_size=6561)
    with open(root / "cosyvoice2.yaml", "a") as f:
        f.write(TINY_FLOW_YAML + parity_hift.hift_yaml(base_channels=32, cond_channels=32))
    cfg = cosyvoice2.read_yaml(root)
    flow = parity_flow.build_reference(cosyvoice2_flow.config_from_yaml(cfg), seed=1)
    torch.save(flow.state_dict(), root / "flow.pt")
    hift = parity_hift.build_reference(cosyvoice2_hift.config_from_yaml(cfg), seed=2)
    torch.save(hift.state_dict(), root / "hift.pt")
    export_s3_tokenizer(str(root / "speech_tokenizer_v2.onnx"), version="v2")
    export_campplus_like(str(root / "campplus.onnx"))
    gen = torch.Generator().manual_seed(3)
    torch.save({s: {"embedding": torch.randn(1, 192, generator=gen)} for s in ("spk_a", "spk_b")}, root / "spk2info.pt")
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Synthetic Parquet train / dev lists in CosyVoice's schema (real WAV audio, 4 speakers, 1-3 s): ``.train_list``
    (24 rows), ``.dev_list`` (8 rows), ``.rows`` (the train rows), ``.dev_rows``; shared by the trainer tests."""
    import types

    from sovits2_jax.data.prep import synthetic

    rows = synthetic.make_rows(32, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=5)
    root = tmp_path_factory.mktemp("tiny_corpus")
    train = synthetic.write_corpus(str(root / "train"), rows[:24], rows_per_file=4)
    dev = synthetic.write_corpus(str(root / "dev"), rows[24:], rows_per_file=4)
    return types.SimpleNamespace(train_list=train, dev_list=dev, rows=rows[:24], dev_rows=rows[24:])


@pytest.fixture(scope="session")
def write_trainer_steps():
    """``write(workdir, {step: {player: params}}, meta, eval_losses={step: loss | None}, keep_best=10)``: steps saved
    by the trainer's own ``Checkpoints`` (every item of its layout), and metrics.jsonl records as the trainer logs
    them (eval steps carry ``eval_loss``; train_state keeps the last eval's loss, as the trainer's counters do)."""
    import json

    import numpy as np

    def write(workdir, players_by_step: dict, meta: dict, eval_losses: dict | None = None, keep_best: int = 10):
        import grain

        from sovits2_jax.train.checkpoint import Checkpoints

        losses = eval_losses or {}
        batches = iter(grain.MapDataset.range(8).to_iter_dataset())
        ckpts = Checkpoints(str(workdir), keep_last=100, keep_best=keep_best, async_save=False)
        last = None
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as log:
            for step, players in players_by_step.items():
                loss = losses.get(step)
                last = loss if loss is not None else last
                counters = {"step": step, "family": meta.get("family", "test"), "eval_loss": last}
                opt_state = {name: {"count": np.int32(step)} for name in players}
                ckpts.save(step, players, opt_state, counters, batches, {**meta, "step": step}, eval_loss=loss)
                ckpts.wait()
                log.write(json.dumps({"step": step, "loss": 9.0, **({} if loss is None else {"eval_loss": 7.0})}))
                log.write("\n")
                if loss is not None:  # a resumed run logs the step again: its last record counts
                    log.write(json.dumps({"step": step, "loss": 9.0, "eval_loss": loss}) + "\n")
        ckpts.close()

    return write
