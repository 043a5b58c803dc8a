"""CosyVoice2 configs, one ConfigDict per model part: ``--config=configs/cosyvoice2.py:ARG``.

ARG is ``<part>`` or ``<part>_<size>``: ``llm`` (CosyVoice2-0.5B's Qwen2LM), ``llm_tiny`` (tests and demos),
``flow`` / ``flow_tiny`` (flow-matching mel decoder), ``hift`` / ``hift_tiny`` (vocoder and its GAN training).
``PARTS`` maps a part name to the function building its section; flow / hift sections are added beside it.
The chosen part's section is ``config.<part>`` and ``config.part`` names it.
"""

import importlib.util
from pathlib import Path

import ml_collections

from sovits2_jax.parallel.rules import mesh_config, sharding_config


def sibling_config(name: str):
    """Another file of configs/ as a module (loaded by path: config files are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_configs_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qwen2_model_config(size: str) -> ml_collections.ConfigDict:
    """The backbone section of configs/qwen2.py."""
    return sibling_config("qwen2").model_config(size)


def hift_config(size: str = "") -> ml_collections.ConfigDict:
    """HiFT vocoder + GAN training section of configs/hift.py."""
    return sibling_config("hift").hift_config(size)


def sampling_config() -> ml_collections.ConfigDict:
    """CosyVoice2's RAS (ras_sampling: top_p 0.8, top_k 25, window 10, tau_r 0.1)."""
    return ml_collections.ConfigDict(
        dict(method="ras", temperature=1.0, top_p=0.8, top_k=25, win_size=10, tau_r=0.1, max_trials=100)
    )


def llm_config(size: str = "") -> ml_collections.ConfigDict:
    """Qwen2LM: Qwen2-0.5B backbone, 6561 speech tokens (+ eos, unused, fill), mix ratio 5:15."""
    if size not in ("", "tiny"):
        raise ValueError(f"unknown cosyvoice2 llm size {size!r}; choose '' (0.5B) or 'tiny'")
    backbone = qwen2_model_config("tiny" if size == "tiny" else "0.5b")
    backbone.tie_word_embeddings = True
    return ml_collections.ConfigDict(
        dict(
            model=dict(
                backbone=backbone,
                speech_token_size=100 if size == "tiny" else 6561,
                layout="cosyvoice2",
                mix_ratio=(5, 15),
                lsm_weight=0.0,
                length_normalized_loss=True,
                text_feature_dim=0,
                loss_on_references=False,
            ),
            sampling=sampling_config(),
            # Qwen2LM.inference: min / max speech tokens = ratio x text tokens (without the prompt text)
            generation=dict(min_token_text_ratio=2.0, max_token_text_ratio=20.0, prompt_bucket=16, chunk=25),
            # LibriTTS recipe: Adam, constant lr 1e-5 after 2500 warm-up steps, clip 5, accumulate 2
            train=dict(
                batch_size=8 if size == "tiny" else 32,
                lr=1e-5,
                warmup_steps=2500,
                grad_clip=5.0,
                accum_grad=2,
                max_frames_in_batch=2000,
                bistream_probability=0.5,
            ),
        )
    )


def flow_config(size: str = "") -> ml_collections.ConfigDict:
    """Flow-matching decoder section of configs/flow.py ('' = CosyVoice2 size, 'tiny')."""
    return sibling_config("flow").flow_config(size)


PARTS = {"llm": llm_config, "flow": flow_config, "hift": hift_config}


def get_config(arg: str = "llm") -> ml_collections.ConfigDict:
    part, _, size = (arg or "llm").partition("_")
    if part not in PARTS:
        raise ValueError(f"unknown cosyvoice2 part {part!r}; choose one of {', '.join(PARTS)}")
    config = ml_collections.ConfigDict()
    config.model_type = f"cosyvoice2.{part}"
    config.part = part
    config[part] = PARTS[part](size)
    config.mesh = mesh_config()
    config.sharding = sharding_config()
    config.seed = 0
    config.workdir = f"out/cosyvoice2_{part}"
    return config
