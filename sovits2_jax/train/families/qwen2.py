"""The ``qwen2`` family: a plain Qwen2 causal LM on synthetic token batches (the MFU measurement at 0.5B).

Its batches are ``data.synthetic_tokens.SyntheticTokens`` (``make_batches``); no Parquet list is read
(``config.data`` is absent).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.data.synthetic_tokens import SyntheticTokens
from sovits2_jax.models import qwen2 as qwen2_model
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.train import family as family_lib
from sovits2_jax.train.family import Family, Phase, Player

EVAL_BATCHES = 4  # dev batches when config.train.eval_batches is 0


def model_config(config) -> Qwen2Config:
    section = config.model.to_dict()
    section.update(dtype=family_lib.compute_dtype(config), param_dtype="float32")
    section["remat_policy"] = family_lib.remat(config, section.get("remat_policy", "none"))
    return Qwen2Config.from_dict(section)


def causal_lm_loss(models, batch, rng, train):
    """Mean next-token cross-entropy over the valid rows' positions; accuracy; weight = scored tokens."""
    tokens = batch["tokens"]
    logits = models["model"](tokens[:, :-1])[0].astype(jnp.float32)
    targets = tokens[:, 1:]
    keep = jnp.broadcast_to(batch["valid"][:, None], targets.shape).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    n = jnp.sum(keep)
    denom = jnp.maximum(n, 1.0)
    acc = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * keep) / denom
    return jnp.sum(nll * keep) / denom, {"acc": acc, "weight": n}


@dataclasses.dataclass(frozen=True)
class Qwen2Family(Family):
    name: str = "qwen2"
    init_part = "qwen2"

    def validate(self, config) -> None:
        qwen2_model.validate(config.model)

    def players(self, config) -> list[Player]:
        cfg = model_config(config)
        return [Player("model", lambda: Qwen2ForCausalLM(cfg, rngs=nnx.Rngs(config.seed)), config.train.optimizer)]

    def phases(self, config) -> list[Phase]:
        return [Phase("model", causal_lm_loss)]

    def eval_loss(self, config):
        return causal_lm_loss

    def make_batches(self, config, split: str):
        t = config.train
        vocab = config.model.vocab_size
        if split == "train":
            return SyntheticTokens(batch_size=t.batch_size, seq_len=t.seq_len, vocab=vocab, seed=config.seed)
        n = t.eval_batches or EVAL_BATCHES
        return SyntheticTokens(batch_size=t.batch_size, seq_len=t.seq_len, vocab=vocab, seed=config.seed + 1,
                               num_batches=n)  # fmt: skip

    def tokens(self, batch):
        return jnp.sum(batch["valid"]) * (batch["tokens"].shape[1] - 1)

    def init_from(self, config, path: str, params: dict) -> dict:
        from sovits2_jax.convert import parts

        loaded, _ = parts.load(path, "qwen2", scan_layers=config.model.scan_layers)
        return {**params, "model": loaded}

    def export_meta(self, config) -> dict:
        from sovits2_jax.convert import parts

        return parts.export_meta("qwen2", model_config(config), "model")


FAMILY = Qwen2Family()
