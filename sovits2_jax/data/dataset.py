"""The Grain ``MapDataset`` of planned batches: element ``i`` is this process's share of global step ``i``.

Each epoch's plan comes from the Parquet index alone (row groups permuted and split into logical shards, rows
shuffled in windows, then bucketed or packed by the family's task, shapes kept in lockstep across shards; a process
reads its contiguous shards, see ``order``), so a batch is a
pure function of (seed, step) and reading resumes anywhere. Built and validated by ``pipeline.build_dataset``.
"""

from __future__ import annotations

import bisect
import collections
import logging
import sys
import threading

import grain
import numpy as np

from sovits2_jax.data import batching, order, source, tasks

log = logging.getLogger(__name__)


class PlannedBatches(grain.MapDataset):
    """Element ``i``: this process's batch at global step ``i`` (numpy dict plus ``_``-prefixed metadata)."""

    def __init__(self, cfg, index: source.ParquetIndex, *, process_index: int = 0, process_count: int = 1):
        super().__init__([])
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        import ml_collections

        self.cfg = ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
        self.index = index
        self.process_index = process_index
        self.process_count = process_count
        self.num_shards = order.num_shards(self.cfg.get("num_shards", 0), process_count)
        self.shards = order.shards_of(process_index, process_count, self.num_shards)
        self.task = tasks.get(self.cfg.kind)(self.cfg, index)
        self.reader = source.RowReader(index, self.task.columns(index.columns), cache_mb=cfg.cache_mb)
        self._init_plans()
        self.buckets = batching.make_buckets(self._bucket_lengths(), cfg.max_frames_in_batch, cfg.batch_multiple or 1)

    def _bucket_lengths(self) -> list[int]:
        """The configured lengths, or (``num_buckets`` > 0) lengths fitted to this corpus's length histogram:
        a function of the index only, so every process gets the same buckets."""
        c = self.cfg
        if c["num_buckets"] <= 0 or not self.task.fits_buckets:
            return list(c["bucket_lengths"])
        lengths, skips = self.task.row_lengths(np.arange(len(self.index)))
        keep = np.ones(len(lengths), bool)
        for m in skips.values():
            keep &= ~m
        longest = c["max_frames_in_batch"] // (c["batch_multiple"] or 1)
        lengths = lengths[keep & (lengths <= longest)]
        if lengths.size == 0:
            raise ValueError(f"no utterance fits max_frames_in_batch={c['max_frames_in_batch']}; nothing to bucket")
        fitted = batching.fit_bucket_lengths(lengths, c["num_buckets"], self.task.bucket_multiple())
        log.info("data: %d bucket lengths fitted to %d utterances: %s", len(fitted), lengths.size, fitted)
        return fitted

    def _init_plans(self):
        self._rows_of_group = self.index.rows_of_group()
        self._plans: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self._starts = [0]  # global step of each epoch's start, as far as computed
        self._plan_lock = threading.RLock()  # grain reads elements from several threads
        self._ahead: set[int] = set()

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_rows_of_group", "_plans", "_starts", "_plan_lock", "_ahead"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_plans()

    def _epoch_plan(self, epoch: int):
        """(steps, plan-time skip counts of this process's shards) for ``epoch``: steps = [(bucket, per-shard
        slots)], one entry (slots or None) per shard this process reads."""
        c = self.cfg
        groups = order.shard_groups(self.index.num_groups, c["seed"], epoch, self.num_shards)
        plans, my_skips = [], collections.Counter()
        for s in range(self.num_shards):
            rows = order.shard_order(
                self._rows_of_group, groups[s], seed=c["seed"], epoch=epoch, shard=s, window_groups=c["window_groups"]
            )
            skips = collections.Counter()
            plans.append(self.task.plan(rows, epoch, s, skips, self.buckets))
            if s in self.shards:
                my_skips.update(skips)
        merged = batching.lockstep(plans)
        return [(b, [slots[s] for s in self.shards]) for b, slots in merged], dict(+my_skips)

    def _plan(self, epoch: int):
        with self._plan_lock:
            plan = self._plans.get(epoch)
        if plan is None:
            plan = self._epoch_plan(epoch)  # outside the lock: readers of the current epoch go on meanwhile
            with self._plan_lock:
                plan = self._plans.setdefault(epoch, plan)
                while len(self._plans) > 3:
                    self._plans.popitem(last=False)
        return plan

    def _plan_ahead(self, epoch: int) -> None:
        """Computes the next epoch's plan in the background (seconds for large corpora)."""
        last = self.cfg["num_epochs"]
        with self._plan_lock:
            if epoch in self._plans or epoch in self._ahead or (last > 0 and epoch >= last):
                return
            self._ahead.add(epoch)
        threading.Thread(target=self._plan, args=(epoch,), daemon=True).start()

    def examples(self, epoch: int) -> list[tuple[int, ...]]:
        """Every example (row ids, target last) this process reads in ``epoch``, in plan order."""
        plan, _ = self._plan(epoch)
        return [ex for _, shards in plan for slots in shards for slot in slots or [] for ex in slot]

    def steps_per_epoch(self, epoch: int) -> int:
        return len(self._plan(epoch)[0])

    def _locate(self, step: int) -> tuple[int, int]:
        """(epoch, step inside the epoch) of a global step."""
        with self._plan_lock:
            return self._locate_locked(step)

    def _locate_locked(self, step: int) -> tuple[int, int]:
        while self._starts[-1] <= step:
            e = len(self._starts) - 1
            if self.cfg["num_epochs"] > 0 and e >= self.cfg["num_epochs"]:
                raise IndexError(f"step {step} is past the last epoch")
            n = self.steps_per_epoch(e)
            if n == 0:
                raise ValueError("the data plan has no batches: every row was filtered out (see the skip counts)")
            self._starts.append(self._starts[-1] + n)
        e = bisect.bisect_right(self._starts, step) - 1
        return e, step - self._starts[e]

    def __len__(self) -> int:
        if self.cfg["num_epochs"] < 0:
            return sys.maxsize
        return sum(self.steps_per_epoch(e) for e in range(self.cfg["num_epochs"]))

    def __getitem__(self, step):
        if isinstance(step, slice):
            return self.slice(step)
        epoch, k = self._locate(int(step))
        plan, plan_skips = self._plan(epoch)
        if k >= len(plan) // 2:
            self._plan_ahead(epoch + 1)
        b, slots = plan[k]
        batch = self._load(int(step), self.buckets[b], slots)
        if k == 0:
            batch["_skipped"].update(plan_skips)
        batch["_epoch"] = epoch
        return batch

    def __str__(self):
        return f"PlannedBatches(kind={self.cfg['kind']}, rows={len(self.index)}, buckets={len(self.buckets)})"

    def _load(self, step: int, bucket: batching.Bucket, shard_slots) -> dict:
        """This process's rows of ``step``: its shards' batches one after the other (a shard with nothing for this
        global step's shape contributes padding rows)."""
        skipped: collections.Counter = collections.Counter()
        slots = []
        for shard in shard_slots:
            shard = list(shard or [])
            slots += shard + [[] for _ in range(bucket.batch - len(shard))]
        local = batching.Bucket(len(slots), bucket.length)
        batch, utts = self.task.load(self.reader, step, local, slots, skipped, row_offset=self.shards[0] * bucket.batch)
        batch["_skipped"] = skipped
        batch["_utts"] = utts
        batch["_step"] = step
        return batch
