"""The ``qwen2`` family: a plain Qwen2 causal LM on synthetic token batches (the MFU measurement at 0.5B).

Batches come from a Grain ``MapDataset`` (so the ``data`` checkpoint item holds their position): element ``i`` is
a [batch, seq_len + 1] block of token runs drawn from (seed, i, process) (``token_runs``) -- structure a model can
learn, so the loss falls. No Parquet list is read (``config.data`` is absent).
"""

from __future__ import annotations

import collections
import dataclasses

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.train import family as family_lib
from sovits2_jax.train.family import Phase, Player

EVAL_BATCHES = 4  # dev batches when config.train.eval_batches is 0


def model_config(config) -> Qwen2Config:
    section = config.model.to_dict()
    section.update(dtype=family_lib.compute_dtype(config), param_dtype="float32")
    section["remat_policy"] = family_lib.remat(config, section.get("remat_policy", "none"))
    return Qwen2Config.from_dict(section)


def token_runs(seed: int, index: int, process: int, rows: int, length: int, vocab: int) -> np.ndarray:
    """Runs of 1-4 repeats of Zipf-distributed ids (p ~ 1 / rank): a skewed unigram and copying to learn."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index, process])
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=(rows, length), p=p / p.sum())
    repeat = rng.integers(1, 5, size=(rows, length))
    starts = np.maximum.accumulate(np.where(np.arange(length)[None, :] % repeat == 0, np.arange(length), 0), axis=1)
    return np.take_along_axis(ids, starts, axis=1).astype(np.int32)


class SyntheticTokens:
    """This process's share of the synthetic batches with a Grain iterator (get_state / set_state)."""

    batch_axes = ("data", "fsdp")

    def __init__(self, *, batch_size: int, seq_len: int, vocab: int, seed: int, num_batches: int | None = None):
        rows = batch_size // jax.process_count()
        process = jax.process_index()

        def make(i):
            tokens = token_runs(seed, int(i), process, rows, seq_len + 1, vocab)
            return {"tokens": tokens, "valid": np.ones((rows,), bool)}

        dataset = grain.MapDataset.range(num_batches or np.iinfo(np.int64).max).map(make)
        self.iterator = iter(dataset.to_iter_dataset())
        self.skipped: collections.Counter = collections.Counter()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self.iterator)

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state) -> None:
        self.iterator.set_state(state)

    def close(self) -> None:
        pass


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
class Qwen2Family:
    name: str = "qwen2"

    def data_kind(self, config) -> str:
        return "synthetic"

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
        from sovits2_jax.train import pretrained

        loaded, _ = pretrained.load(path, "qwen2", scan_layers=config.model.scan_layers)
        return {**params, "model": loaded}

    def export_meta(self, config) -> dict:
        from sovits2_jax.train import pretrained

        return pretrained.export_meta("qwen2", model_config(config), "model")


FAMILY = Qwen2Family()
