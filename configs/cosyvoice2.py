"""CosyVoice2 configs, one per model part and size: ``--config=configs/cosyvoice2.py:ARG``.

ARG is ``<part>`` or ``<part>_<size>``: ``llm`` (CosyVoice2-0.5B's Qwen2LM), ``llm_small`` (CPU-scale quality runs),
``llm_tiny`` (tests and demos), ``flow`` / ``flow_small`` / ``flow_tiny`` (flow-matching mel decoder), ``hift`` /
``hift_small`` / ``hift_tiny`` (vocoder and its GAN training), ``dpo`` / ``dpo_small`` / ``dpo_tiny`` (the llm
fine-tuned by DPO against a frozen reference, family ``dpo``). Every config has the one shape: ``family``, ``model``,
``train``, ``data``, ``init``, ``mesh``, ``sharding`` and the family's own sections (llm / dpo: ``sampling``,
``generation``; hift: ``mel``, ``f0``, ``discriminator``, ``loss``). Flow and HiFT model presets live in
configs/flow.py and configs/hift.py.

    python -m sovits2_jax.train --config=configs/cosyvoice2.py:flow_tiny --workdir=out/flow \\
        --config.data.train_list=data/train/data.list --config.model.estimator.n_blocks=2
"""

import ml_collections

from sovits2_jax.configs import flow, hift, qwen2
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

# size: (qwen2 backbone preset, speech tokens); "" = release
LLM_PRESETS = {
    "tiny": ("tiny", 6561),  # the real S3 vocabulary: the data carries its tokens
    "small": ("small", 6561),
    "release": ("0.5b", 6561),
}
# LibriTTS recipe: Adam, constant lr 1e-5 after 2500 warm-up steps, clip 5, accumulate 2
LLM_RECIPE = dict(lr=1e-5, warmup_steps=2500, grad_clip=5.0, accum_grad=2, bistream_probability=0.5)
# tiny: seconds per step on CPU, short utterances (the built-in synthetic corpora)
LLM_TINY_TRAIN = dict(num_steps=200, log_every=10, eval_every=50, checkpoint_every=50)
LLM_TINY_DATA = dict(bucket_lengths=(32, 48, 64, 80), max_frames_in_batch=256, worker_count=0)


def llm_config(size: str = "", family: str = "llm") -> ml_collections.ConfigDict:
    """Qwen2LM (Qwen2 backbone, 6561 speech tokens + eos, unused, fill; mix ratio 5:15) trained by ``family``
    (llm, or dpo) on the ``llm`` data task."""
    backbone, speech_tokens = lookup(LLM_PRESETS, size, "cosyvoice2 llm size", {"": "release"})
    # every size embeds the whole Qwen2 vocabulary: the data task tokenizes text with CosyVoice2's tokenizer
    model = speech_lm_model(
        qwen2.model_config(backbone, tie_word_embeddings=True, vocab_size=151936),
        layout="cosyvoice2",
        speech_token_size=speech_tokens,
        text_feature_dim=0,
    )
    config = base_config(family, f"out/cosyvoice2_{family}", model, sampling=sampling_config(),
                         generation=generation_config())  # fmt: skip
    recipe, tiny = LLM_RECIPE, size == "tiny"
    sections = training_sections(
        family,
        "llm",
        optimizer=dict(lr=1e-3 if tiny else recipe["lr"], warmup_steps=0 if tiny else recipe["warmup_steps"],
                       grad_clip=recipe["grad_clip"]),
        accum_steps=1 if tiny else recipe["accum_grad"],
        bistream_probability=recipe["bistream_probability"],
        **(LLM_TINY_TRAIN if tiny else {}),
    )  # fmt: skip
    data, accum = sections["data"], sections["train"].accum_steps
    if tiny:
        data.update(LLM_TINY_DATA)
    else:
        # one 8-device host, as the recipe: CosyVoice accumulates accum_grad batches of 2000 mel frames (1000 tokens,
        # the llm task's default) per GPU; we split one process batch of devices x accum x 1000 tokens into accum
        # microbatches, each device's share 1000 tokens (other device counts: scale both keys)
        data.max_frames_in_batch *= RECIPE_DEVICES * accum
    config.update(sections)
    return config


def dpo_config(size: str = "") -> ml_collections.ConfigDict:
    """The llm fine-tuned by DPO: the rejected speech tokens in the batches, and cosyvoice's train.py
    ``DPOLoss(beta=0.01)`` against a reference loaded from ``ref_from`` ("" = the policy's init.path)."""
    config = llm_config(size, family="dpo")
    config.data.dpo = True
    config.train.dpo = ml_collections.ConfigDict(dict(beta=0.01, label_smoothing=0.0, ipo=False, ref_from=""))
    return config


PARTS = {"llm": llm_config, "dpo": dpo_config, "flow": flow.flow_config, "hift": hift.hift_config}


def get_config(arg: str = "llm") -> ml_collections.ConfigDict:
    return part_config(PARTS, arg, "llm", "configs/cosyvoice2.py")
