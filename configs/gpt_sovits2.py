"""GPT-SoVITS2 configs (AR part): ``--config=configs/gpt_sovits2.py:ARG`` with ARG ``ar``, ``ar_small`` or
``ar_tiny``.

The AR model is our SpeechLM in the ``gpt_sovits2`` layout: ``x1 + y1 + ... + xn -> yn`` under one RoPE,
S3 speech tokens (4096, speech tokenizer v1), Qwen2 BPE text with optional per-token BGE-M3-sized features
(1024-d) through an MLP. Backbone from GPT-SoVITS2's own config: hidden 768, 16 heads, 20 layers, FFN 4096.
"""

import ml_collections

from configs import qwen2
from configs.common import lookup, part_config, speech_lm_config

# size: (qwen2 backbone preset, its overrides, speech tokens, text feature dim, batch size)
AR_PRESETS = {
    "tiny": ("tiny", {}, 100, 32, 8),
    "small": ("small", {}, 4096, 1024, 8),
    "release": (
        "0.5b",
        dict(hidden_size=768, intermediate_size=4096, num_layers=20, num_heads=16, num_kv_heads=16),
        4096,
        1024,
        32,
    ),
}


def ar_config(size: str = "") -> ml_collections.ConfigDict:
    backbone, overrides, speech_tokens, feature_dim, batch_size = lookup(
        AR_PRESETS, size, "gpt_sovits2 ar size", {"": "release"}
    )
    return speech_lm_config(
        qwen2.model_config(backbone, **overrides, tie_word_embeddings=True),  # the text LM head is never used
        layout="gpt_sovits2",
        speech_token_size=speech_tokens,
        text_feature_dim=feature_dim,
        train=dict(batch_size=batch_size, lr=1e-4, warmup_steps=2000, grad_clip=1.0, max_references=3),
    )


PARTS = {"ar": ar_config}


def get_config(arg: str = "ar") -> ml_collections.ConfigDict:
    return part_config("gpt_sovits2", arg, PARTS, "ar")
