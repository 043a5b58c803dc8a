"""The ``dpo`` family: CosyVoice2's preference fine-tuning of the speech LM (``cosyvoice/bin/train.py --dpo``).

Two players: ``model`` (the policy, trained) and ``reference`` (the same architecture, frozen, loaded from
``config.train.dpo.ref_from``, else a copy of the policy's initial weights). Per batch both score the chosen
speech tokens and the rejected ones (the Parquet column ``reject_speech_token``; data task ``llm`` with
``config.data.dpo``); the loss is DPOLoss(beta) on the per-row mean target log-probs plus the policy's CE on the
chosen rows (cosyvoice's ``batch_forward``: ``loss = preference_loss + sft_loss``).

Differences from the reference, both deliberate: one bistream draw per row is shared by the policy and the
reference (the reference draws twice, so a row can be scored uni- by one and bistream by the other), and a row's
log-prob is averaged over its own scored positions (``speech_lm.cosyvoice2_forward_dpo`` explains why).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sovits2_jax.models import speech_lm as slm
from sovits2_jax.text.layouts import IGNORE_ID
from sovits2_jax.train.families import llm
from sovits2_jax.train.family import Family, Phase, Player
from sovits2_jax.validation import ConfigError


def bistream_uniform(rng: jax.Array, rows: int) -> jax.Array:
    """The per-row uniform draws deciding bistream (the reference's ``random.random()``), chosen rows first."""
    return jax.random.uniform(rng, (rows,))


def preference_forward(model: slm.SpeechLM, batch: dict, bistream: jax.Array) -> dict[str, jax.Array]:
    """Chosen then rejected rows through one model: the chosen rows' CE and accuracy, every row's mean target
    log-prob. Rows with ``batch["valid"]`` False (batch padding, unreadable rows) score nothing."""
    b = batch["text_token"].shape[0]
    valid = jnp.asarray(batch.get("valid", jnp.ones((b,), bool)), bool)
    seq = slm.cosyvoice2_sequence(
        jnp.concatenate([batch["text_token"]] * 2),
        jnp.concatenate([batch["text_token_len"]] * 2),
        jnp.concatenate([batch["speech_token"], batch["reject_speech_token"]]),
        jnp.concatenate([batch["speech_token_len"], batch["reject_speech_token_len"]]),
        bistream,
        speech_token_size=model.config.speech_token_size,
        mix_ratio=model.config.mix_ratio,
    )
    targets = jnp.where(jnp.concatenate([valid, valid])[:, None], seq["targets"], IGNORE_ID)
    logits = model(seq["kinds"], seq["ids"], lengths=seq["lengths"])
    cfg = model.config
    sft = slm.label_smoothing_loss(
        logits[:b], targets[:b], smoothing=cfg.lsm_weight, normalize_length=cfg.length_normalized_loss
    )
    logps = slm.sequence_logps(logits, targets)
    return dict(
        sft_loss=sft, acc=slm.accuracy(logits[:b], targets[:b]), chosen_logps=logps[:b], rejected_logps=logps[b:]
    )


def masked_dpo_loss(policy: dict, reference: dict, valid: jax.Array, *, beta, label_smoothing, ipo) -> dict:
    """``speech_lm.dpo_loss`` per row, averaged over the valid rows: loss, chosen / rejected reward, accuracy."""

    def one_row(c, r, rc, rr):
        return slm.dpo_loss(c[None], r[None], rc[None], rr[None], beta=beta, label_smoothing=label_smoothing, ipo=ipo)

    rows = jax.vmap(one_row)(
        policy["chosen_logps"],
        policy["rejected_logps"],
        jax.lax.stop_gradient(reference["chosen_logps"]),
        jax.lax.stop_gradient(reference["rejected_logps"]),
    )
    w = valid.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    return {k: jnp.sum(v * w) / n for k, v in rows.items()}


def dpo_sft_loss(
    models: dict, batch: dict, rng: jax.Array, *, beta: float, label_smoothing: float = 0.0, ipo: bool = False,
    bistream_probability: float = 0.5,
) -> tuple[jax.Array, dict[str, jax.Array]]:  # fmt: skip
    """preference (DPO) + SFT loss of ``models["model"]`` against the frozen ``models["reference"]``."""
    b = batch["text_token"].shape[0]
    valid = jnp.asarray(batch.get("valid", jnp.ones((b,), bool)), bool)
    draw = bistream_uniform(rng, 2 * b) < bistream_probability
    pol = preference_forward(models["model"], batch, draw)
    ref = preference_forward(models["reference"], batch, draw)
    pref = masked_dpo_loss(pol, ref, valid, beta=beta, label_smoothing=label_smoothing, ipo=ipo)
    loss = pref["loss"] + pol["sft_loss"]
    aux = dict(
        sft_loss=pol["sft_loss"],
        dpo_loss=pref["loss"],
        dpo_acc=pref["accuracy"],
        chosen_reward=pref["chosen_reward"],
        rejected_reward=pref["rejected_reward"],
        acc=pol["acc"],
        weight=jnp.sum(valid.astype(jnp.float32)),  # utterances (the DPO term is a mean over rows)
    )
    return loss, aux


def dpo_options(config) -> dict:
    """beta / label_smoothing / ipo of ``config.train.dpo`` (cosyvoice's train.py: DPOLoss(beta=0.01))."""
    section = config.train.dpo
    beta = float(section.beta)
    if beta <= 0:
        raise ConfigError(f"config.train.dpo.beta={beta} must be positive")
    return dict(beta=beta, label_smoothing=float(section.label_smoothing), ipo=bool(section.ipo))


def make_loss(config):
    """The family's loss ``(models, batch, rng, train) -> (loss, aux)`` on the ``model`` player."""
    options = dict(dpo_options(config), bistream_probability=llm.bistream_probability(config))

    def loss(models, batch, rng, train):
        return dpo_sft_loss(models, batch, rng, **options)

    return loss


def load_llm(config, path: str, current: dict) -> dict:
    """``current`` (a SpeechLM's params) with the llm part of ``path`` (any ``parts.load`` source)."""
    from sovits2_jax.convert import parts

    loaded, _ = parts.load(path, "llm", scan_layers=llm.model_config(config).backbone.scan_layers)
    return llm.merge_pretrained(current, loaded, f"{path!r}")


@dataclasses.dataclass(frozen=True)
class DpoFamily(Family):
    name: str = "dpo"
    init_part = "llm"

    def validate(self, config) -> None:
        llm.validate_speech_lm(config)

    def players(self, config) -> list[Player]:
        if not config.data.get("dpo", False):
            raise ConfigError("family dpo needs config.data.dpo=True (the rejected speech tokens)")
        if config.train.dpo.ref_from and not config.init.path:
            raise ConfigError(
                f"config.train.dpo.ref_from={config.train.dpo.ref_from!r} needs config.init.path (the policy's "
                "initial weights): the reference is loaded with them"
            )
        dpo_options(config)
        make = llm.make_model(config)  # the same seed: without init.path the reference is the policy's init
        return [Player("model", make, config.train.optimizer), Player("reference", make, None)]

    def phases(self, config) -> list[Phase]:
        return [Phase("model", make_loss(config))]

    def eval_loss(self, config):
        return make_loss(config)

    def tokens(self, batch):
        return jnp.sum(batch["speech_token_len"] + batch["reject_speech_token_len"] + 2 * batch["text_token_len"])

    def init_from(self, config, path: str, params: dict) -> dict:
        """The policy from ``path``; the reference from ``config.train.dpo.ref_from``, else the same weights."""
        policy = load_llm(config, path, params["model"])
        ref_from = config.train.dpo.ref_from
        reference = load_llm(config, ref_from, params["reference"]) if ref_from else policy
        return {**params, "model": policy, "reference": reference}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("llm", llm.model_config(config), "model")


FAMILY = DpoFamily()
