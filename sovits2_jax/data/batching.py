"""Length buckets under a frame budget, batch plans, and lockstep batch shapes across processes.

A bucket is a fixed (batch, length) shape with ``batch * length <= max_frames_in_batch``; an example goes to the
smallest bucket whose length holds it and a batch is emitted when the bucket has ``batch`` examples, so a jitted
step sees at most ``len(buckets)`` shapes. Plans are computed from the index alone (no audio is read), by every
process for every process, then merged so that at each global step all processes emit the same shape
(``make_array_from_process_local_data`` needs that); a process with nothing left for that shape sends a padding
batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

Example = tuple[int, ...]  # row ids; the target row last (earlier ones are same-speaker prompts)
Slot = list[Example]  # one batch row: one example, or several packed ones
LocalBatch = tuple[int, list[Slot]]  # (bucket id, slots)


@dataclasses.dataclass(frozen=True)
class Bucket:
    batch: int
    length: int


def make_buckets(lengths: Sequence[int], max_frames_in_batch: int, batch_multiple: int = 1) -> tuple[Bucket, ...]:
    """Buckets for the given lengths: the largest multiple of ``batch_multiple`` rows within the frame budget."""
    if not lengths:
        raise ValueError("data.bucket_lengths must list at least one length")
    if batch_multiple < 1:
        raise ValueError(f"data.batch_multiple={batch_multiple} must be >= 1")
    out = []
    for length in sorted({int(x) for x in lengths}):
        if length <= 0:
            raise ValueError(f"data.bucket_lengths: {length} must be positive")
        b = (max_frames_in_batch // length) // batch_multiple * batch_multiple
        if b < 1:
            raise ValueError(
                f"data.bucket_lengths: length {length} x batch_multiple {batch_multiple} exceeds "
                f"data.max_frames_in_batch={max_frames_in_batch} (a shard's frame budget; "
                f"{length * batch_multiple} or more fits)"
            )
        out.append(Bucket(b, length))
    return tuple(out)


def geometric_lengths(shortest: int, longest: int, growth: float = 1.25, multiple: int = 2) -> list[int]:
    """Bucket lengths from ``shortest`` to ``longest`` growing by ``growth``, rounded up to ``multiple``."""
    out, x = [], float(shortest)
    while True:
        v = min(int(-(-np.ceil(x) // multiple) * multiple), longest)
        if not out or v > out[-1]:
            out.append(v)
        if v >= longest:
            return out
        x *= growth


def fit_bucket_lengths(lengths: np.ndarray, num_buckets: int, multiple: int = 1) -> list[int]:
    """``num_buckets`` bucket lengths (multiples of ``multiple``) minimising the total padding of ``lengths``
    when each length goes to the smallest bucket holding it (exact dynamic programme over the distinct lengths)."""
    lengths = np.asarray(lengths, np.int64)
    lengths = -(-lengths[lengths > 0] // multiple) * multiple
    if lengths.size == 0:
        raise ValueError("fit_bucket_lengths: no positive lengths to fit buckets to")
    values, counts = np.unique(lengths, return_counts=True)
    n = len(values)
    k_max = min(num_buckets, n)
    cum_c = np.concatenate([[0], np.cumsum(counts)])
    cum_s = np.concatenate([[0], np.cumsum(counts * values)])
    inf = np.iinfo(np.int64).max // 4
    # cost[k][j]: least padding of values[: j + 1] with k + 1 buckets, the last one of length values[j]
    cost = np.full((k_max, n), inf, np.int64)
    arg = np.zeros((k_max, n), np.int64)
    starts = np.arange(n)
    for j in range(n):
        waste = values[j] * (cum_c[j + 1] - cum_c[starts[: j + 1]]) - (cum_s[j + 1] - cum_s[starts[: j + 1]])
        cost[0, j] = waste[0]
        for k in range(1, k_max):
            prev = np.concatenate([[inf], cost[k - 1, :j]])  # bucket k starts at i; the previous ends at i - 1
            total = np.where(prev < inf, prev + waste, inf)
            arg[k, j] = int(np.argmin(total))
            cost[k, j] = total[arg[k, j]]
    k = int(np.argmin(cost[:, n - 1]))
    out, j = [], n - 1
    while True:
        out.append(int(values[j]))
        if k == 0:
            break
        j, k = int(arg[k, j]) - 1, k - 1
    return sorted(out)


def bucket_ids(lengths: np.ndarray, buckets: Sequence[Bucket]) -> np.ndarray:
    """Smallest bucket holding each length (-1: longer than the largest bucket)."""
    bl = np.asarray([b.length for b in buckets])
    ids = np.searchsorted(bl, np.asarray(lengths), side="left")
    return np.where(ids < len(bl), ids, -1)


def bucket_plan(
    examples: Sequence[Example], lengths: np.ndarray, buckets: Sequence[Bucket], *, drop_remainder: bool
) -> list[LocalBatch]:
    """Batches in reading order: each example joins the queue of its bucket, a full queue becomes a batch;
    partial queues are emitted at the end (padded later) unless ``drop_remainder``."""
    ids = bucket_ids(lengths, buckets)
    queues: list[list[Slot]] = [[] for _ in buckets]
    out: list[LocalBatch] = []
    for ex, b in zip(examples, ids):
        if b < 0:
            continue
        queues[b].append([ex])
        if len(queues[b]) == buckets[b].batch:
            out.append((int(b), queues[b]))
            queues[b] = []
    if not drop_remainder:
        out.extend((b, q) for b, q in enumerate(queues) if q)
    return out


def pack_plan(
    examples: Sequence[Example], lengths: np.ndarray, bucket: Bucket, *, drop_remainder: bool
) -> list[LocalBatch]:
    """First-fit packing into ``bucket.batch`` rows of ``bucket.length`` positions; when an example fits in
    no row of the open batch, the batch is emitted and a new one started."""
    out: list[LocalBatch] = []
    rows: list[Slot] = [[] for _ in range(bucket.batch)]
    free = [bucket.length] * bucket.batch
    for ex, n in zip(examples, np.asarray(lengths).tolist()):
        if n > bucket.length:
            continue
        j = next((j for j, f in enumerate(free) if f >= n), None)
        if j is None:
            out.append((0, rows))
            rows, free, j = [[] for _ in range(bucket.batch)], [bucket.length] * bucket.batch, 0
        rows[j].append(ex)
        free[j] -= n
    if any(rows) and not drop_remainder:
        out.append((0, rows))
    return out


def lockstep(plans: Sequence[Sequence[LocalBatch]]) -> list[tuple[int, list[list[Slot] | None]]]:
    """Merges per-process plans into global steps of one bucket each: the k-th batch of bucket b of every
    process forms one step (None where a process has no k-th batch of b). Steps are ordered by the mean
    relative position of their batches in the local plans, which keeps each process's reads in its order."""
    num_buckets = 1 + max((b for plan in plans for b, _ in plan), default=-1)
    per = [[[] for _ in range(num_buckets)] for _ in plans]  # per[p][b] = [(position, slots)]
    for p, plan in enumerate(plans):
        for pos, (b, slots) in enumerate(plan):
            per[p][b].append((pos / max(len(plan), 1), slots))
    steps = []
    for b in range(num_buckets):
        for k in range(max(len(per[p][b]) for p in range(len(plans)))):
            got = [per[p][b][k] if k < len(per[p][b]) else None for p in range(len(plans))]
            key = float(np.mean([g[0] for g in got if g is not None]))
            steps.append((key, b, [g[1] if g is not None else None for g in got]))
    steps.sort(key=lambda s: (s[0], s[1]))
    return [(b, slots) for _, b, slots in steps]


def pad_stack(arrays: Sequence[np.ndarray | None], length: int | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Stacks per-row arrays (None = padding row) into [B, length, *shape] (or [B, *shape] when length is None),
    zero-padded at the end of the time axis."""
    lead = (len(arrays),) if length is None else (len(arrays), length)
    out = np.zeros(lead + tuple(shape), dtype)
    for i, a in enumerate(arrays):
        if a is None:
            continue
        if length is None:
            out[i] = a
        else:
            if a.shape[0] > length:
                raise ValueError(f"pad_stack: row {i} has {a.shape[0]} steps, more than the bucket's {length}")
            out[i, : a.shape[0]] = a
    return out
