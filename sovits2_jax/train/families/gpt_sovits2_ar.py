"""The ``gpt_sovits2_ar`` family: the GPT-SoVITS2 AR (our SpeechLM in the ``gpt_sovits2`` layout, ``config.model``).

Batches come from the ``gpt_sovits2`` data task: same-speaker examples ``x1 + y1 + ... + xn -> yn`` packed into
rows, told apart by ``segment_ids`` with ``positions`` restarting per example, so no position attends across
examples. The loss is the label-smoothed CE and the accuracy on the target block ``yn`` and its eos; with
``loss_on_references`` (the model config) also on every reference block ``y1 .. y(n-1)`` (each ending in eos).
``aux["weight"]`` is the number of scored positions.

Several codebooks per frame (``config.model.num_codebooks`` K > 1; the batch's ``codes_extra`` / ``targets_extra``
from ``config.data.codes_column``, see ``data/tasks/gpt_sovits2.py``): the loss is head 0's CE (speech tokens and eos,
as with one codebook) plus each extra head's CE on its own targets (the same frames, without eos), each averaged
over its own scored positions, unweighted: every codebook carries an equal share of the frame's information (the
groups split the SSL channels), so none is down-weighted. ``acc`` is head 0's accuracy, ``acc_cb1`` .. those of the
extra heads, ``loss_cb0`` .. each head's CE.

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


def with_reference_targets_extra(batch: dict) -> jax.Array:
    """``with_reference_targets`` for codebooks 1..K-1: [B, L, K-1] (a reference's eos has none)."""
    kinds, seg, codes = batch["kinds"], batch["segment_ids"], batch["codes_extra"]
    next_is_speech = (kinds[:, 1:] == SPEECH) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] > 0)
    ref = jnp.where(next_is_speech[..., None], codes[:, 1:], IGNORE_ID)
    ref = jnp.pad(ref, ((0, 0), (0, 1), (0, 0)), constant_values=IGNORE_ID)
    return jnp.where(batch["targets_extra"] != IGNORE_ID, batch["targets_extra"], ref)


def ar_loss(model: slm.SpeechLM, batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(CE, aux) of a packed batch; rows with ``valid`` False score nothing."""
    cfg = model.config
    targets = with_reference_targets(batch) if cfg.loss_on_references else batch["targets"]
    valid = jnp.asarray(batch["valid"], bool)
    targets = jnp.where(valid[:, None], targets, IGNORE_ID)
    multi = cfg.num_codebooks > 1
    hidden = model.hidden(
        batch["kinds"],
        batch["ids"],
        text_features=batch.get("text_features"),
        text_segments=batch.get("text_segments"),
        segment_ids=batch["segment_ids"],
        positions=batch["positions"],
        **({"codes_extra": batch["codes_extra"]} if multi else {}),
    )
    logits = model.logits(hidden)

    def ce(logits, targets):
        return slm.label_smoothing_loss(
            logits, targets, smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
        )

    loss = ce(logits, targets)
    scored = jnp.sum(targets != IGNORE_ID).astype(jnp.float32)
    weight = scored if cfg.length_normalized_loss else jnp.float32(targets.shape[0])
    aux = {"acc": slm.accuracy(logits, targets), "weight": weight, "target_tokens": scored}
    if multi:
        extra = with_reference_targets_extra(batch) if cfg.loss_on_references else batch["targets_extra"]
        extra = jnp.where(valid[:, None, None], extra, IGNORE_ID)
        extra_logits = model.extra_logits(hidden)
        aux["loss_cb0"] = loss
        for k in range(cfg.num_codebooks - 1):
            loss_k = ce(extra_logits[:, :, k], extra[..., k])
            loss = loss + loss_k
            aux[f"loss_cb{k + 1}"] = loss_k
            aux[f"acc_cb{k + 1}"] = slm.accuracy(extra_logits[:, :, k], extra[..., k])
    return loss, aux


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
        if config.data.get("num_codebooks", 1) != cfg.num_codebooks:
            raise ConfigError(
                f"config.data.num_codebooks={config.data.get('num_codebooks', 1)} must equal "
                f"config.model.num_codebooks={cfg.num_codebooks} (the codes per frame the batches carry)"
            )
        if cfg.num_codebooks > 1 and cfg.extra_vocab < cfg.speech_token_size:
            raise ConfigError(
                f"config.model.extra_codebook_size={cfg.extra_codebook_size} is below "
                f"config.model.speech_token_size={cfg.speech_token_size}: the data task passes codes up to "
                "speech_token_size - 1 in every codebook"
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
