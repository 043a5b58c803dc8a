"""CosyVoice2 flow (token -> mel) presets and training config, used as ``--config=configs/cosyvoice2.py:flow[_SIZE]``.

``release`` (= ``real``, "") is CosyVoice2-0.5B's flow (the LibriTTS recipe's cosyvoice2.yaml), ``small`` the
CPU-scale quality configuration, ``tiny`` the test size; ``PRESETS`` is the one table of them (``named_config``).
``flow_config(size)`` is the whole config of the ``flow`` family; its ``model`` converts with
``FlowConfig.from_section(config.model)``.
"""

import dataclasses

import ml_collections

from sovits2_jax.configs.common import RECIPE_DEVICES, base_config, lookup, training_sections
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


# the mel frontend of the flow's targets (matcha mel_spectrogram of cosyvoice2.yaml)
MEL = dict(n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0.0, fmax=8000.0)
# Adam lr 1e-5 constant after 2500 warm-up steps, grad clip 5, accumulation 2, dynamic batches of at most 2000
# frames (cosyvoice2.yaml train_conf)
RECIPE = dict(max_frames_in_batch=2000, lr=1e-5, warmup_steps=2500, grad_clip=5.0, accum_grad=2)
# tiny: seconds per step on CPU; the built-in synthetic corpora hold 1-3 s utterances (50-150 frames)
TINY_TRAIN = dict(num_steps=200, log_every=10, eval_every=50, checkpoint_every=50)
# batches of a multiple of 8 rows: valid on 1 device and on the 8 simulated ones of the tests
TINY_DATA = dict(bucket_lengths=(64, 96, 128, 160), max_frames_in_batch=1280, batch_multiple=8, worker_count=0)


def flow_config(size: str = "") -> ml_collections.ConfigDict:
    """The ``flow`` family's config: the preset model, the data task ``flow`` with the model's token/mel ratio,
    x-vector size and mel frontend, and the LibriTTS recipe's training. ``tiny`` takes the recipe's vocabularies
    (6561 S3 tokens, 192-d x-vectors) so it trains on the recipe's lists, lr 1e-3 without warm-up, small buckets."""
    model, tiny = named_config(size), size == "tiny"
    if tiny:
        model = dataclasses.replace(model, vocab_size=6561, spk_embed_dim=192)
    config = base_config("flow", "out/cosyvoice2_flow", ml_collections.ConfigDict(model.to_dict()))
    sections = training_sections(
        "flow",
        "flow",
        optimizer=dict(lr=1e-3 if tiny else RECIPE["lr"], warmup_steps=0 if tiny else RECIPE["warmup_steps"],
                       grad_clip=RECIPE["grad_clip"]),
        accum_steps=1 if tiny else RECIPE["accum_grad"],
        **(TINY_TRAIN if tiny else {}),
    )  # fmt: skip
    data, accum = sections["data"], sections["train"].accum_steps
    data.token_mel_ratio, data.embedding_dim = model.token_mel_ratio, model.spk_embed_dim
    mel = dict(MEL)
    data.sample_rate = mel.pop("sampling_rate")
    data.mel.update(mel)
    if tiny:
        data.update(TINY_DATA)
    else:
        # one 8-device host, as the recipe: per device accum_steps microbatches of the recipe's 2000 frames per step
        data.max_frames_in_batch = RECIPE["max_frames_in_batch"] * RECIPE_DEVICES * accum
    config.update(sections)
    return config
