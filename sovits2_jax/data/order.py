"""Deterministic epoch order and sharding over row groups.

The data is split into ``S`` logical shards (``config.data.num_shards``; 0 = one per process). Each epoch the row
groups are permuted with (seed, epoch); shard ``s`` owns groups ``perm[s::S]`` (disjoint, together all of them) and
reads them in windows of ``window_groups`` groups whose rows are shuffled together (``window_groups=0``: one window
= a full shuffle of the shard's rows). Process ``p`` of ``P`` reads the contiguous shards ``shards_of(p, P, S)``, so
the global batch of a step is the same for any process count dividing ``S``: a job resumed on another number of
hosts continues the same data stream. Every process can compute every shard's order, which is what keeps batch
shapes in lockstep across hosts (see ``batching.lockstep``).
"""

from __future__ import annotations

import numpy as np


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), *[int(m) for m in more]])


def num_shards(configured: int, process_count: int) -> int:
    """The logical shard count: ``configured`` (a multiple of the process count) or one per process."""
    shards = configured or process_count
    if shards % process_count:
        raise ValueError(f"config.data.num_shards={configured} is not a multiple of the {process_count} processes")
    return shards


def shards_of(process_index: int, process_count: int, shards: int) -> range:
    """The contiguous shards a process reads (its rows come first in the global batch in this order)."""
    per = shards // process_count
    return range(process_index * per, (process_index + 1) * per)


def shard_groups(num_groups: int, seed: int, epoch: int, shards: int) -> list[np.ndarray]:
    """Row groups of each shard for ``epoch``."""
    if num_groups < shards:
        raise ValueError(
            f"{num_groups} parquet row groups cannot be split into {shards} data shards (one per process unless "
            "config.data.num_shards says more); write smaller shards (parquet_writer --num_utts_per_parquet) or "
            "use fewer processes"
        )
    perm = epoch_rng(seed, epoch).permutation(num_groups)
    return [perm[s::shards] for s in range(shards)]


def shard_order(
    rows_of_group: list[np.ndarray], groups: np.ndarray, *, seed: int, epoch: int, shard: int, window_groups: int
) -> np.ndarray:
    """Row ids of one shard in reading order: windows of groups, rows shuffled inside each window."""
    rng = epoch_rng(seed, epoch, 1, shard)
    w = len(groups) if window_groups <= 0 else window_groups
    parts = []
    for start in range(0, len(groups), max(w, 1)):
        rows = np.concatenate([rows_of_group[g] for g in groups[start : start + w]] or [np.zeros(0, np.int64)])
        parts.append(rng.permutation(rows))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
