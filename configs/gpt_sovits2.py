"""GPT-SoVITS2 configs: ``--config=configs/gpt_sovits2.py:ARG`` with ARG ``ar``, ``ar_small``, ``ar_tiny`` (the AR
part, family ``gpt_sovits2_ar``) or ``vits``, ``vits_small``, ``vits_tiny`` (the VITS2 decoder and its GAN training,
family ``vits``).

The AR model is our SpeechLM in the ``gpt_sovits2`` layout: ``x1 + y1 + ... + xn -> yn`` under one RoPE,
S3 speech tokens (6561: the recipe's speech tokenizer v2, as the vits part reads), Qwen2 BPE text (the whole
151936-id vocabulary at every size) with optional per-token BGE-M3-sized features (1024-d) through an MLP.
Backbone from GPT-SoVITS2's own config: hidden 768, 16 heads, 20 layers, FFN 4096.

``--config.data.text_source=bge_m3 --config.data.text_encoder=DIR`` trains the AR on GPT-SoVITS2's own text inputs,
the text encoder's ids and per-token features (columns added by ``python -m sovits2_jax.data.prep.text_features``):
the text vocabulary (``model.backbone.vocab_size``) and the feature width (``model.text_feature_dim``,
``data.text_feature_dim``) are then the encoder directory's (see ``sovits2_jax/train/families/gpt_sovits2_ar.py``).
"""

import ml_collections

from sovits2_jax.configs import qwen2, vits2
from sovits2_jax.configs.common import (
    RECIPE_DEVICES,
    base_config,
    generation_config,
    lookup,
    part_config,
    sampling_config,
    speech_lm_model,
    training_sections,
)

# size: (qwen2 backbone preset, its overrides, speech tokens, text feature dim, batch size)
AR_PRESETS = {
    "tiny": ("tiny", {}, 6561, 32, 8),
    "small": ("small", {}, 6561, 1024, 8),
    "release": (
        "0.5b",
        dict(hidden_size=768, intermediate_size=4096, num_layers=20, num_heads=16, num_kv_heads=16),
        6561,
        1024,
        32,
    ),
}
# size: row length of the packed examples (a batch holds batch_size rows); tiny: the built-in corpora's 1-3 s
AR_ROW_LENGTH = {"tiny": 256, "small": 1024, "release": 2048}


AR_RECIPE = dict(lr=1e-4, warmup_steps=2000, grad_clip=1.0, max_references=3)
AR_TINY_TRAIN = dict(num_steps=200, log_every=10, eval_every=50, checkpoint_every=50)


def ar_config(size: str = "") -> ml_collections.ConfigDict:
    """The AR (family ``gpt_sovits2_ar``, data task ``gpt_sovits2``: each target with 1..max_references same-speaker
    references, packed into rows); tiny: lr 1e-3 without warm-up."""
    backbone, overrides, speech_tokens, feature_dim, batch_size = lookup(
        AR_PRESETS, size, "gpt_sovits2 ar size", {"": "release"}
    )
    model = speech_lm_model(
        # the text LM head is never used
        qwen2.model_config(backbone, **{**overrides, "vocab_size": 151936}, tie_word_embeddings=True),
        layout="gpt_sovits2",
        speech_token_size=speech_tokens,
        text_feature_dim=feature_dim,
    )
    model.update(num_codebooks=1, extra_codebook_size=0)  # > 1: GPT-SoVITS2's GRVQ codes (data.num_codebooks too)
    config = base_config("gpt_sovits2_ar", "out/gpt_sovits2_ar", model, sampling=sampling_config(),
                         generation=generation_config())  # fmt: skip
    recipe, tiny = AR_RECIPE, size == "tiny"
    row = lookup(AR_ROW_LENGTH, size, "gpt_sovits2 ar size", {"": "release"})
    sections = training_sections(
        "gpt_sovits2_ar",
        "gpt_sovits2",
        optimizer=dict(lr=1e-3 if tiny else recipe["lr"], warmup_steps=0 if tiny else recipe["warmup_steps"],
                       grad_clip=recipe["grad_clip"]),
        **(AR_TINY_TRAIN if tiny else {}),
    )  # fmt: skip
    data = sections["data"]
    data.update(bucket_lengths=(row,), max_frames_in_batch=row * batch_size, max_prompts=recipe["max_references"])
    data.speech_token_size = speech_tokens
    if tiny:
        data.worker_count = 0
    else:  # batch_size rows on one 8-device host, as the recipe
        data.batch_multiple = RECIPE_DEVICES
    config.update(sections)
    return config


# size: (configs/vits2.py preset, batch size, crop frames, reference frames); every size takes BPE ids (151936
# rows) and the recipe's 6561 S3 tokens
VITS_PRESETS = {"tiny": ("tiny", 4, 40, 100), "small": ("small", 8, 150, 300), "release": ("sovits2", 32, 200, 300)}


def vits_model(size: str = ""):
    """GPT-SoVITS2's VITS2 (configs/vits2.py's presets) reading BPE text and S3 v2 (6561) tokens."""
    preset = lookup(VITS_PRESETS, size, "gpt_sovits2 vits size", {"": "release"})[0]
    return vits2.model_config(preset).replace(n_symbols=151936, speech_vocab_size=6561 + 3)


def vits_config(size: str = "") -> ml_collections.ConfigDict:
    """The VITS2 decoder (family ``vits``): same-speaker references, zero-shot as GPT-SoVITS2 trains."""
    preset, batch, crop, ref = lookup(VITS_PRESETS, size, "gpt_sovits2 vits size", {"": "release"})
    return vits2.vits_training_config(
        vits_model(size), "out/gpt_sovits2_vits", discriminator=vits2.discriminator_section(preset), batch_size=batch,
        crop_frames=crop, reference="speaker", ref_frames=ref,
    )  # fmt: skip


PARTS = {"ar": ar_config, "vits": vits_config}


def get_config(arg: str = "ar") -> ml_collections.ConfigDict:
    return part_config(PARTS, arg, "ar", "configs/gpt_sovits2.py")
