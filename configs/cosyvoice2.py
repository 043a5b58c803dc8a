"""CosyVoice2 configs, one ConfigDict per model part: ``--config=configs/cosyvoice2.py:ARG``.

ARG is ``<part>`` or ``<part>_<size>``: ``llm`` (CosyVoice2-0.5B's Qwen2LM), ``llm_small`` (CPU-scale quality runs),
``llm_tiny`` (tests and demos), ``flow`` / ``flow_small`` / ``flow_tiny`` (flow-matching mel decoder), ``hift`` /
``hift_small`` / ``hift_tiny`` (vocoder and its GAN training). ``PARTS`` maps a part name to the function building
its section; flow / hift sections come from configs/flow.py and configs/hift.py. The chosen part's section is
``config.<part>`` and ``config.part`` names it.
"""

import ml_collections

from configs import flow, hift, qwen2
from configs.common import lookup, part_config, speech_lm_config

# size: (qwen2 backbone preset, speech tokens, batch size); "" = release
LLM_PRESETS = {
    "tiny": ("tiny", 100, 8),
    "small": ("small", 6561, 8),
    "release": ("0.5b", 6561, 32),
}


def llm_config(size: str = "") -> ml_collections.ConfigDict:
    """Qwen2LM: Qwen2 backbone, 6561 speech tokens (+ eos, unused, fill), mix ratio 5:15."""
    backbone, speech_tokens, batch_size = lookup(LLM_PRESETS, size, "cosyvoice2 llm size", {"": "release"})
    return speech_lm_config(
        qwen2.model_config(backbone, tie_word_embeddings=True),
        layout="cosyvoice2",
        speech_token_size=speech_tokens,
        text_feature_dim=0,
        # LibriTTS recipe: Adam, constant lr 1e-5 after 2500 warm-up steps, clip 5, accumulate 2
        train=dict(
            batch_size=batch_size,
            lr=1e-5,
            warmup_steps=2500,
            grad_clip=5.0,
            accum_grad=2,
            max_frames_in_batch=2000,
            bistream_probability=0.5,
        ),
    )


PARTS = {"llm": llm_config, "flow": flow.flow_config, "hift": hift.hift_config}


def get_config(arg: str = "llm") -> ml_collections.ConfigDict:
    return part_config("cosyvoice2", arg, PARTS, "llm")
