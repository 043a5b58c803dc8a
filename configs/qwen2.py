"""Qwen2 decoder configs: ``--config=configs/qwen2.py:ARG`` with ARG in tiny, small, 50m, 100m, 0.5b (= release).

``PRESETS`` is the one table of Qwen2 sizes; the speech LMs of configs/cosyvoice2.py and configs/gpt_sovits2.py
take their backbones from it (``model_config``).
"""

import ml_collections

from sovits2_jax.configs.common import base_config, lookup, training_sections

PRESETS = {
    # name: (vocab, hidden, ffn, layers, heads, kv_heads, tied)
    "tiny": (512, 64, 160, 2, 4, 2, False),
    # CPU-scale quality runs: the Qwen2 tokenizer's vocabulary, 6 layers of width 384
    "small": (151936, 384, 1536, 6, 6, 2, True),
    "50m": (32000, 512, 2048, 8, 8, 2, True),
    "100m": (32000, 768, 2048, 10, 12, 2, True),
    "0.5b": (151936, 896, 4864, 24, 14, 2, True),
}
ALIASES = {"release": "0.5b"}


def model_config(size: str, **overrides) -> ml_collections.ConfigDict:
    """The model section (Qwen2Config fields; head_dim 0 = hidden_size // num_heads) of a preset."""
    vocab, hidden, ffn, layers, heads, kv, tied = lookup(PRESETS, size, "qwen2 size", ALIASES)
    section = ml_collections.ConfigDict(
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
    section.update(overrides)
    return section


def preset(size: str):
    """The preset as a Qwen2Config."""
    from sovits2_jax.models.qwen2 import Qwen2Config

    return Qwen2Config.from_dict(model_config(size))


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    config = base_config("qwen2", "out/qwen2", model=model_config(arg or "tiny"))
    # the qwen2 family trains on synthetic token batches of batch_size x seq_len (no config.data)
    for name, section in training_sections("qwen2", None, batch_size=8, seq_len=320).items():
        config[name] = section
    config.parity = ml_collections.ConfigDict(dict(device="cpu", dtype="float32", batch=2, seq_len=320))
    return config
