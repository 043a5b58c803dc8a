"""Qwen2 decoder configs: ``--config=configs/qwen2.py:ARG`` with ARG in tiny, 50m, 100m, 0.5b."""

import ml_collections

from sovits2_jax.parallel.rules import mesh_config, sharding_config

SIZES = {
    # name: (vocab, hidden, ffn, layers, heads, kv_heads, tied)
    "tiny": (512, 64, 160, 2, 4, 2, False),
    "50m": (32000, 512, 2048, 8, 8, 2, True),
    "100m": (32000, 768, 2048, 10, 12, 2, True),
    "0.5b": (151936, 896, 4864, 24, 14, 2, True),
}


def model_config(size: str) -> ml_collections.ConfigDict:
    if size not in SIZES:
        raise ValueError(f"unknown qwen2 size {size!r}; choose one of {', '.join(SIZES)}")
    vocab, hidden, ffn, layers, heads, kv, tied = SIZES[size]
    return ml_collections.ConfigDict(
        dict(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=0,  # 0 = hidden_size // num_heads
            rope_theta=1_000_000.0,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=tied,
            attention_bias=True,
            dtype="float32",
            param_dtype="float32",
            attention_impl=ml_collections.config_dict.placeholder(str),
            remat_policy="none",
            scan_layers=False,
        )
    )


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model_type = "qwen2"
    config.model = model_config(arg or "tiny")
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = "out/qwen2"
    config.train = ml_collections.ConfigDict(dict(batch_size=8, seq_len=320))
    config.parity = ml_collections.ConfigDict(dict(device="cpu", dtype="float32", batch=2, seq_len=320))
    return config
