"""The ``llm`` family: CosyVoice2's ``Qwen2LM`` (``config.model``) trained on the ``llm`` data task.

Each row is laid out unistream or, with probability ``config.train.bistream_probability`` (the reference's
``random.random() < 0.5``, drawn per row from the step's rng) and when its speech/text ratio allows, bistream
(``speech_lm.cosyvoice2_sequence``). The loss is the reference's label-smoothed CE over the scored positions
(``length_normalized_loss``: a mean over them, so ``aux["weight"]`` is their count) and the accuracy; rows that
are batch padding (``valid`` False) score nothing.

``--config.init.path`` takes a CosyVoice2 model directory (its ``llm.pt``), an HF Qwen2 directory (the backbone
only, as CosyVoice's ``qwen_pretrain_path``) or an Orbax checkpoint of ours (``convert/parts.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models import sampling_config
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.text.layouts import IGNORE_ID
from sovits2_jax.train import family as family_lib
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError

PART = "llm"


def model_config(config) -> slm.SpeechLMConfig:
    """The SpeechLMConfig of ``config.model`` with the trainer's compute dtype and remat policy."""
    section = config.model.to_dict()
    backbone = dict(section["backbone"])
    backbone.update(dtype=family_lib.compute_dtype(config), param_dtype="float32")
    backbone["remat_policy"] = family_lib.remat(config, backbone.get("remat_policy", "none"))
    section["backbone"] = backbone
    return slm.SpeechLMConfig.from_section(section, "config.model")


def validate_speech_lm(config) -> None:
    """A speech-LM family's own sections: ``model`` (SpeechLMConfig) and ``sampling``."""
    slm.validate(config.model, prefix="config.model")
    sampling_config.validate(config.sampling, prefix="config.sampling")


def make_model(config):
    """() -> a freshly initialised SpeechLM (seeded by config.seed): a Player's ``make_model``."""
    cfg = model_config(config)
    return lambda: slm.SpeechLM(cfg, rngs=nnx.Rngs(config.seed))


def check_vocabulary(config) -> None:
    """The data's speech tokens must index the model's table (an out-of-range id would make the loss NaN)."""
    model, data = config.model.speech_token_size, config.data.get("speech_token_size", 0)
    if data > model:
        raise ConfigError(f"config.data.speech_token_size={data} exceeds config.model.speech_token_size={model}")


def bistream_probability(config) -> float:
    return float(config.train.get("bistream_probability", 0.5))


def cosyvoice2_lm_loss(model: slm.SpeechLM, batch: dict, draw: jax.Array):
    """(loss, aux) of one batch given the per-row bistream draw [B] bool."""
    valid = jnp.asarray(batch["valid"], bool)
    seq = slm.cosyvoice2_sequence(
        batch["text_token"], batch["text_token_len"], batch["speech_token"], batch["speech_token_len"], draw,
        speech_token_size=model.config.speech_token_size, mix_ratio=model.config.mix_ratio,
    )  # fmt: skip
    targets = jnp.where(valid[:, None], seq["targets"], IGNORE_ID)
    logits = model(seq["kinds"], seq["ids"], lengths=seq["lengths"])
    cfg = model.config
    loss = slm.label_smoothing_loss(
        logits, targets, smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
    )
    scored = jnp.sum(targets != IGNORE_ID).astype(jnp.float32)
    weight = scored if cfg.length_normalized_loss else jnp.float32(targets.shape[0])
    bistream = jnp.sum(seq["bistream"] & valid) / jnp.maximum(jnp.sum(valid), 1)
    return loss, {"acc": slm.accuracy(logits, targets), "bistream_fraction": bistream, "weight": weight}


def make_loss(config):
    """The family's loss ``(models, batch, rng, train) -> (loss, aux)`` on the ``model`` player."""
    p = bistream_probability(config)

    def loss(models, batch, rng, train):
        draw = jax.random.uniform(rng, batch["valid"].shape) < p
        return cosyvoice2_lm_loss(models["model"], batch, draw)

    return loss


def merge_pretrained(current: dict, loaded: dict, where: str) -> dict:
    """``current`` with every subtree present in ``loaded`` replaced (an HF backbone fills only ``llm``)."""
    out = dict(current)
    for key, value in loaded.items():
        if key not in current:
            raise ConfigError(f"{where}: pretrained params have {key!r}, the model has {sorted(current)}")
        out[key] = merge_pretrained(current[key], value, f"{where}.{key}") if isinstance(value, dict) else value
    return out


@dataclasses.dataclass(frozen=True)
class LlmFamily(Family):
    name: str = "llm"
    init_part = "llm"

    def validate(self, config) -> None:
        validate_speech_lm(config)

    def players(self, config) -> list[Player]:
        check_vocabulary(config)
        return [Player("model", make_model(config), config.train.optimizer)]

    def phases(self, config) -> list[Phase]:
        return [Phase("model", make_loss(config))]

    def eval_loss(self, config):
        return make_loss(config)

    def tokens(self, batch):
        return jnp.sum(batch["speech_token_len"] + batch["text_token_len"])

    def init_from(self, config, path: str, params: dict) -> dict:
        from sovits2_jax.convert import parts

        scan = model_config(config).backbone.scan_layers
        loaded, _ = parts.load(path, PART, scan_layers=scan)
        return {**params, "model": merge_pretrained(params["model"], loaded, f"config.init.path={path!r}")}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta(PART, model_config(config), "model")


FAMILY = LlmFamily()
