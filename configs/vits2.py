"""VITS decoder configs: ``--config=configs/vits2.py[:ARG]``, ARG in ``v2`` (default, released GPT-SoVITS s2 v2),
``v1``, ``sovits2`` (GPT-SoVITS2's VITS2: S3 tokens, BPE text, RoPE, hidden 256 / 4 heads / filter 1024,
6-layer transformer couplings) or ``tiny`` (the sovits2 layout shrunk for tests, 8 kHz).

``config.vits.model`` holds ``VitsConfig`` fields (``sovits2_jax.models.vits2.config``); ``train`` follows
GPT-SoVITS's s2.json (AdamW lr 1e-4, betas 0.8/0.99, eps 1e-9, decay 0.999875, c_mel 45, c_kl 1).
"""

import dataclasses

import ml_collections

from sovits2_jax.models.vits2.config import VitsConfig, gpt_sovits2, gpt_sovits_v1, gpt_sovits_v2
from sovits2_jax.parallel.rules import mesh_config, sharding_config


def tiny() -> VitsConfig:
    """GPT-SoVITS2 layout at toy size (8 kHz, hop 160 = 50 frames/s, 25 Hz tokens)."""
    return gpt_sovits2().replace(
        sampling_rate=8000,
        n_fft=256,
        hop_length=160,
        win_length=256,
        n_mel_channels=40,
        inter_channels=32,
        hidden_channels=64,
        filter_channels=128,
        n_heads=2,
        n_layers=2,
        speech_vocab_size=64 + 3,
        n_symbols=64,
        mrte_hidden=64,
        mrte_heads=2,
        gin_channels=64,
        ref_channels=129,
        style_hidden=32,
        posterior_layers=4,
        flow_layers=2,
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3, 5),),
        upsample_rates=(8, 5, 4),
        upsample_kernel_sizes=(16, 11, 8),
        upsample_initial_channel=64,
        segment_size=2560,
        p_dropout=0.0,
    )


PRESETS = {"v2": gpt_sovits_v2, "v1": gpt_sovits_v1, "sovits2": gpt_sovits2, "tiny": tiny}


def model_config(arg: str = "") -> VitsConfig:
    arg = arg or "v2"
    if arg not in PRESETS:
        raise ValueError(f"unknown vits2 config {arg!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[arg]()


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = model_config(arg)
    config = ml_collections.ConfigDict()
    config.model_type = "vits2"
    config.vits = ml_collections.ConfigDict(
        dict(
            model=cfg.to_dict(),
            discriminator=dict(periods=(2, 3, 5, 7, 11), scale_layers="vits"),
            train=dict(
                batch_size=4 if arg == "tiny" else 32,
                learning_rate=1e-4,
                betas=(0.8, 0.99),
                eps=1e-9,
                lr_decay=0.999875,
                fp16_run=False,  # GPT-SoVITS2: fp32
                epochs=100,
            ),
        )
    )
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = f"out/vits2_{arg or 'v2'}"
    return config


def vits_config(config: ml_collections.ConfigDict) -> VitsConfig:
    """The model section back as a validated VitsConfig (errors name the offending key)."""
    names = {f.name for f in dataclasses.fields(VitsConfig)}
    return VitsConfig.from_dict({k: v for k, v in config.vits.model.items() if k in names})
