"""Synthetic token batches for causal-LM training without a corpus (the qwen2 family's MFU runs).

Batches come from a Grain ``MapDataset`` (so the ``data`` checkpoint item holds their position): element ``i`` is
a [batch, seq_len + 1] block of token runs drawn from (seed, i, process) (``token_runs``) -- structure a model can
learn, so the loss falls.
"""

from __future__ import annotations

import collections

import grain
import jax
import numpy as np


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
