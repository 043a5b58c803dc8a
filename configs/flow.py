"""CosyVoice2 flow (token -> mel) configs: ``--config=configs/flow.py:ARG`` with ARG in real (= release), small, tiny.

``real`` is CosyVoice2-0.5B's flow (examples/libritts/cosyvoice2/conf/cosyvoice2.yaml), ``small`` the CPU-scale
quality configuration, ``tiny`` the test size; ``PRESETS`` is the one table of them (``named_config``).
``config.model`` converts with ``FlowConfig.from_dict(config.model.to_dict())``. ``flow_config(size)`` is the
section configs/cosyvoice2.py mounts as its ``flow`` part ("" = real).
"""

import ml_collections

from configs.common import base_config, lookup
from sovits2_jax.models.flow.config import EncoderConfig, EstimatorConfig, FlowConfig


def tiny_config() -> FlowConfig:
    """A small flow for tests. The torch reference hard-codes a 512-wide encoder (pre-lookahead, upsample), 4
    up-blocks, a look-ahead of 3 and 80 mel channels, so those stay; everything else shrinks."""
    return FlowConfig(
        vocab_size=64,
        spk_embed_dim=16,
        encoder=EncoderConfig(num_blocks=1, linear_units=256, attention_heads=8),
        estimator=EstimatorConfig(channels=(64,), attention_head_dim=32, n_blocks=1, num_mid_blocks=2, num_heads=2),
    )


def small_config() -> FlowConfig:
    """CosyVoice2's flow at a quarter of its widths (encoder 128, estimator 64 channels / 2 heads), same depth, on
    the real 6561 speech tokens and 192-d x-vectors."""
    return FlowConfig(
        input_size=128,
        encoder=EncoderConfig(input_size=128, output_size=128, attention_heads=2, linear_units=512),
        estimator=EstimatorConfig(channels=(64,), num_heads=2),
    )


PRESETS = {"tiny": tiny_config, "small": small_config, "release": FlowConfig}
ALIASES = {"": "release", "real": "release"}


def named_config(size: str) -> FlowConfig:
    """The preset as a FlowConfig: tiny, small, release (= real)."""
    return lookup(PRESETS, size, "flow size", ALIASES)()


def flow_config(size: str = "") -> ml_collections.ConfigDict:
    """model (FlowConfig fields), mel frontend, LibriTTS-recipe training, inference / streaming settings."""
    return ml_collections.ConfigDict(
        dict(
            model=named_config(size).to_dict(),
            mel=dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=8000.0),
            # Adam lr 1e-5 constant after 2500 warm-up steps, grad clip 5, accumulation 2, dynamic batches of at
            # most 2000 frames (cosyvoice2.yaml train_conf)
            train=dict(
                batch_size=8,
                max_frames_in_batch=2000,
                lr=1e-5,
                warmup_steps=2500,
                grad_clip=5.0,
                accum_grad=2,
                dtype="float32",
            ),
            inference=dict(n_timesteps=10, token_hop_len=25, streaming_bucket=50, streaming_cache=True),
        )
    )


def get_config(arg: str = "real") -> ml_collections.ConfigDict:
    size = arg or "real"
    config = base_config("flow", f"out/flow_{size}", **flow_config(size))
    config.parity = ml_collections.ConfigDict(dict(device="cpu", dtype="float32", size=size, tokens=100, batch=2))
    return config
