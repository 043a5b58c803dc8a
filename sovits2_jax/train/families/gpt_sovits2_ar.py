"""The ``gpt_sovits2_ar`` family: the GPT-SoVITS2 AR (our SpeechLM in the ``gpt_sovits2`` layout, ``config.model``).

Batches come from the ``gpt_sovits2`` data task: same-speaker examples ``x1 + y1 + ... + xn -> yn`` packed into
rows, told apart by ``segment_ids`` with ``positions`` restarting per example, so no position attends across
examples. The loss is the label-smoothed CE and the accuracy on the target block ``yn`` and its eos; with
``loss_on_references`` (the model config) also on every reference block ``y1 .. y(n-1)`` (each ending in eos).
``aux["weight"]`` is the number of scored positions.

With ``config.data.text_source="bge_m3"`` the text ids and per-token features come from a text encoder directory
(``config.data.text_encoder``, see ``convert/text_encoder.py``): the AR's text table has one row per id of its
tokenizer (``config.model.backbone.vocab_size``) and its feature projection reads the encoder's width
(``config.model.text_feature_dim``, ``config.data.text_feature_dim``). ``adopt`` sets these three from the
directory; validation refuses a config that disagrees with it, naming the key.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp

from sovits2_jax.models import speech_lm as slm
from sovits2_jax.text.layouts import IGNORE_ID, SPEECH
from sovits2_jax.train import text_encoder_sizes
from sovits2_jax.train.families import llm
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError

log = logging.getLogger(__name__)


def with_reference_targets(batch: dict) -> jax.Array:
    """The packed targets plus the reference blocks': each position followed by a speech position of its own
    example (a reference's tokens and its eos, which the layout feeds as input) predicts that token."""
    kinds, ids, seg = batch["kinds"], batch["ids"], batch["segment_ids"]
    next_is_speech = (kinds[:, 1:] == SPEECH) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] > 0)
    ref = jnp.pad(jnp.where(next_is_speech, ids[:, 1:], IGNORE_ID), ((0, 0), (0, 1)), constant_values=IGNORE_ID)
    return jnp.where(batch["targets"] != IGNORE_ID, batch["targets"], ref)


def ar_loss(model: slm.SpeechLM, batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(CE, aux) of a packed batch; rows with ``valid`` False score nothing."""
    cfg = model.config
    targets = with_reference_targets(batch) if cfg.loss_on_references else batch["targets"]
    valid = jnp.asarray(batch["valid"], bool)
    targets = jnp.where(valid[:, None], targets, IGNORE_ID)
    logits = model(
        batch["kinds"],
        batch["ids"],
        text_features=batch.get("text_features"),
        text_segments=batch.get("text_segments"),
        segment_ids=batch["segment_ids"],
        positions=batch["positions"],
    )
    loss = slm.label_smoothing_loss(
        logits, targets, smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
    )
    scored = jnp.sum(targets != IGNORE_ID).astype(jnp.float32)
    weight = scored if cfg.length_normalized_loss else jnp.float32(targets.shape[0])
    return loss, {"acc": slm.accuracy(logits, targets), "weight": weight, "target_tokens": scored}


def text_encoder_keys(vocab: int, width: int) -> dict:
    """The AR's keys a text encoder of ``vocab`` ids and ``width``-wide features decides."""
    return {"model.backbone.vocab_size": vocab, "model.text_feature_dim": width, "data.text_feature_dim": width}


def loss_fn(models, batch, rng, train):
    """The family's loss (no random draws: the data task already chose the references)."""
    return ar_loss(models["model"], batch)


@dataclasses.dataclass(frozen=True)
class GptSovits2Family(Family):
    name: str = "gpt_sovits2_ar"
    init_part = "llm"

    def validate(self, config) -> None:
        llm.validate_speech_lm(config)
        text_encoder_sizes.check(config, text_encoder_keys)

    def adopt(self, config, overrides=()) -> list[str]:
        """The text sizes from ``config.data.text_encoder`` (bge_m3 text only)."""
        return text_encoder_sizes.adopt(config, text_encoder_keys, overrides)

    def players(self, config) -> list[Player]:
        cfg = llm.model_config(config)
        if cfg.layout != "gpt_sovits2":
            raise ConfigError(f"family gpt_sovits2_ar needs config.model.layout='gpt_sovits2', got {cfg.layout!r}")
        if config.data.speech_token_size != cfg.speech_token_size:
            raise ConfigError(
                f"config.data.speech_token_size={config.data.speech_token_size} must equal "
                f"config.model.speech_token_size={cfg.speech_token_size} (the eos id of the packed targets)"
            )
        return [Player("model", llm.make_model(config), config.train.optimizer)]

    def phases(self, config) -> list[Phase]:
        return [Phase("model", loss_fn)]

    def eval_loss(self, config):
        return loss_fn

    def tokens(self, batch):
        return jnp.sum(batch["lengths"])

    def init_from(self, config, path: str, params: dict) -> dict:
        """The AR from an Orbax checkpoint of ours (a gpt_sovits2 trainer checkpoint or an averaged one), or the
        Qwen2 backbone from an HF directory."""
        from sovits2_jax.convert import parts

        scan = llm.model_config(config).backbone.scan_layers
        loaded, _ = parts.load(path, "llm", scan_layers=scan)
        return {**params, "model": llm.merge_pretrained(params["model"], loaded, f"config.init.path={path!r}")}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("llm", llm.model_config(config), "model")


FAMILY = GptSovits2Family()
