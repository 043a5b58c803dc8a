"""GPT-SoVITS2 configs (AR part): ``--config=configs/gpt_sovits2.py:ARG`` with ARG ``ar`` or ``ar_tiny``.

The AR model is our SpeechLM in the ``gpt_sovits2`` layout: ``x1 + y1 + ... + xn -> yn`` under one RoPE,
S3 speech tokens (4096, speech tokenizer v1), Qwen2 BPE text with optional per-token BGE-M3-sized features
(1024-d) through an MLP. Backbone from GPT-SoVITS2's own config: hidden 768, 16 heads, 20 layers, FFN 4096.
"""

import importlib.util
from pathlib import Path

import ml_collections

from sovits2_jax.parallel.rules import mesh_config, sharding_config


def qwen2_model_config(size: str) -> ml_collections.ConfigDict:
    """The backbone section of configs/qwen2.py (loaded by path: config files are not a package)."""
    spec = importlib.util.spec_from_file_location("_configs_qwen2", Path(__file__).with_name("qwen2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model_config(size)


def ar_config(size: str = "") -> ml_collections.ConfigDict:
    if size not in ("", "tiny"):
        raise ValueError(f"unknown gpt_sovits2 ar size {size!r}; choose '' or 'tiny'")
    backbone = qwen2_model_config("tiny")
    if size != "tiny":
        backbone.update(
            dict(
                vocab_size=151936, hidden_size=768, intermediate_size=4096, num_layers=20, num_heads=16, num_kv_heads=16
            )
        )
    backbone.tie_word_embeddings = True  # the text LM head is never used
    return ml_collections.ConfigDict(
        dict(
            model=dict(
                backbone=backbone,
                speech_token_size=100 if size == "tiny" else 4096,
                layout="gpt_sovits2",
                mix_ratio=(5, 15),
                lsm_weight=0.0,
                length_normalized_loss=True,
                text_feature_dim=32 if size == "tiny" else 1024,
                loss_on_references=False,
            ),
            sampling=dict(method="ras", temperature=1.0, top_p=0.8, top_k=25, win_size=10, tau_r=0.1, max_trials=100),
            generation=dict(min_token_text_ratio=2.0, max_token_text_ratio=20.0, prompt_bucket=16, chunk=25),
            train=dict(
                batch_size=8 if size == "tiny" else 32, lr=1e-4, warmup_steps=2000, grad_clip=1.0, max_references=3
            ),
        )
    )


PARTS = {"ar": ar_config}


def get_config(arg: str = "ar") -> ml_collections.ConfigDict:
    part, _, size = (arg or "ar").partition("_")
    if part not in PARTS:
        raise ValueError(f"unknown gpt_sovits2 part {part!r}; choose one of {', '.join(PARTS)}")
    config = ml_collections.ConfigDict()
    config.model_type = f"gpt_sovits2.{part}"
    config.part = part
    config[part] = PARTS[part](size)
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = f"out/gpt_sovits2_{part}"
    return config
