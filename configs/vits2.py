"""VITS decoder configs: ``--config=configs/vits2.py[:ARG]``, ARG in ``v2`` (default, released GPT-SoVITS s2 v2),
``v1``, ``sovits2`` (= release: GPT-SoVITS2's VITS2: S3 tokens, BPE text, RoPE, hidden 256 / 4 heads / filter 1024,
6-layer transformer couplings), ``small`` (the sovits2 layout at 24 kHz and about half width, for CPU-scale quality
runs) or ``tiny`` (the sovits2 layout shrunk for tests, 8 kHz).

``PRESETS`` is the one table of VitsConfig sizes. ``config.vits.model`` holds ``VitsConfig`` fields
(``sovits2_jax.models.vits2.config``); ``train`` follows GPT-SoVITS's s2.json (AdamW lr 1e-4, betas 0.8/0.99,
eps 1e-9, decay 0.999875, c_mel 45, c_kl 1).
"""

import ml_collections

from configs.common import base_config, lookup
from sovits2_jax.models.vits2.config import VitsConfig


def gpt_sovits_v1() -> VitsConfig:
    """Released GPT-SoVITS s2 v1 (322 phoneme symbols, reference encoder over all 1025 bins)."""
    return VitsConfig(version="v1", n_symbols=322, ref_channels=1025)


def gpt_sovits_v2() -> VitsConfig:
    """Released GPT-SoVITS s2 v2 (732 symbols, reference encoder over the first 704 bins)."""
    return VitsConfig(version="v2", n_symbols=732, ref_channels=704)


def gpt_sovits2() -> VitsConfig:
    """GPT-SoVITS2's VITS2 decoder: S3 tokens, BPE text, RoPE, hidden 256 / 4 heads / filter 1024 / 6 layers,
    transformer coupling flow (mean-only, 4 flows, all 6 layers applied)."""
    return VitsConfig(
        version="sovits2",
        inter_channels=192,
        hidden_channels=256,
        filter_channels=1024,
        n_heads=4,
        n_layers=6,
        position="rope",
        content="tokens",
        speech_vocab_size=4096 + 3,
        text_input="ids",
        n_symbols=151936,
        flow="transformer",
        flow_layers=6,
        ref_channels=704,
    )


def small() -> VitsConfig:
    """GPT-SoVITS2 layout at 24 kHz (hop 480 = 50 frames/s, as the data pipeline's audio), about half width."""
    return gpt_sovits2().replace(
        sampling_rate=24000,
        n_fft=1920,
        hop_length=480,
        win_length=1920,
        n_mel_channels=100,
        inter_channels=96,
        hidden_channels=128,
        filter_channels=512,
        n_heads=2,
        n_layers=4,
        mrte_hidden=256,
        mrte_heads=4,
        gin_channels=256,
        style_hidden=128,
        posterior_layers=8,
        flow_layers=4,
        upsample_rates=(8, 5, 3, 2, 2),
        upsample_kernel_sizes=(16, 11, 7, 4, 4),
        upsample_initial_channel=256,
        segment_size=15360,
    )


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


PRESETS = {"v2": gpt_sovits_v2, "v1": gpt_sovits_v1, "sovits2": gpt_sovits2, "small": small, "tiny": tiny}
ALIASES = {"": "v2", "release": "sovits2"}


def model_config(arg: str = "") -> VitsConfig:
    """The preset as a VitsConfig."""
    return lookup(PRESETS, arg, "vits2 config", ALIASES)()


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    name = arg or "v2"
    vits = ml_collections.ConfigDict(
        dict(
            model=model_config(name).to_dict(),
            discriminator=dict(periods=(2, 3, 5, 7, 11), scale_layers="vits"),
            train=dict(
                batch_size={"tiny": 4, "small": 8}.get(name, 32),
                learning_rate=1e-4,
                betas=(0.8, 0.99),
                eps=1e-9,
                lr_decay=0.999875,
                fp16_run=False,  # GPT-SoVITS2: fp32
                epochs=100,
            ),
        )
    )
    return base_config("vits2", f"out/vits2_{name}", vits=vits)


def vits_config(config: ml_collections.ConfigDict) -> VitsConfig:
    """The model section back as a validated VitsConfig (errors name the offending key)."""
    return VitsConfig.from_section(config.vits.model, "config.vits.model")
