"""Deterministic epoch order and per-process sharding over row groups.

Each epoch the row groups are permuted with (seed, epoch); process ``p`` of ``P`` owns groups ``perm[p::P]``
(disjoint, together all of them), and reads them in windows of ``window_groups`` groups whose rows are shuffled
together (``window_groups=0``: one window = a full shuffle of the process's rows). Every process can compute every
other process's order, which is what keeps batch shapes in lockstep across hosts (see ``batching.lockstep``).
"""

from __future__ import annotations

import numpy as np


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), *[int(m) for m in more]])


def process_groups(num_groups: int, seed: int, epoch: int, process_count: int) -> list[np.ndarray]:
    """Row groups of each process for ``epoch``."""
    if num_groups < process_count:
        raise ValueError(
            f"{num_groups} parquet row groups cannot be sharded over {process_count} processes; "
            "write smaller shards (parquet_writer --num_utts_per_parquet) or use fewer processes"
        )
    perm = epoch_rng(seed, epoch).permutation(num_groups)
    return [perm[p::process_count] for p in range(process_count)]


def process_order(
    rows_of_group: list[np.ndarray], groups: np.ndarray, *, seed: int, epoch: int, process: int, window_groups: int
) -> np.ndarray:
    """Row ids of one process in reading order: windows of groups, rows shuffled inside each window."""
    rng = epoch_rng(seed, epoch, 1, process)
    w = len(groups) if window_groups <= 0 else window_groups
    parts = []
    for start in range(0, len(groups), max(w, 1)):
        rows = np.concatenate([rows_of_group[g] for g in groups[start : start + w]] or [np.zeros(0, np.int64)])
        parts.append(rng.permutation(rows))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
