"""Grain input pipeline: Parquet rows -> a family's processing steps -> bucketed / packed batches -> the mesh.

    python -m sovits2_jax.data.pipeline --config=configs/data.py:flow --data_list=data/train/data.list \
        --num_batches=50 [--dump=batches.npz] [--config.data.max_frames_in_batch=4000]

``dataset.PlannedBatches`` is a ``grain.MapDataset`` whose element ``i`` is this process's share of global step
``i``, planned from the Parquet index alone, so the order is a pure function of (seed, step), the iterator state is
one integer per prefetch worker, and a restored iterator yields exactly the batches the uninterrupted run would
have. Unusable rows become padding rows (``valid`` False) and are counted by reason.

What a family reads, how its rows are processed and its batch keys are in ``sovits2_jax/data/tasks/<kind>.py``
(``config.data.kind``). Every batch has ``valid`` [B]. A lockstep filler batch (multi-process, see
``batching.lockstep``) may have no valid row, so losses must guard their denominators. The state of ``Batches``
(and of grain's iterator) depends on ``worker_count``: restore with the same value.
"""

from __future__ import annotations

import collections
import gc
import logging
import sys

import grain
import numpy as np

from sovits2_jax.data import batching, source, tasks
from sovits2_jax.data.dataset import PlannedBatches

META_KEYS = ("_skipped", "_utts", "_step", "_epoch")


def validate(cfg) -> None:
    """Rejects inconsistent data settings with a message naming the key."""
    from sovits2_jax.validation import ConfigError

    def check(ok, msg):
        if not ok:
            raise ConfigError(msg)

    kinds = tasks.kinds()
    check(cfg.kind in kinds, f"config.data.kind={cfg.kind!r} not in {kinds}")
    check(cfg.num_epochs == -1 or cfg.num_epochs >= 1, f"config.data.num_epochs={cfg.num_epochs} must be -1 or >= 1")
    check(cfg.window_groups >= 0, f"config.data.window_groups={cfg.window_groups} must be >= 0")
    check(cfg.num_shards >= 0, f"config.data.num_shards={cfg.num_shards} must be >= 0 (0 = one per process)")
    check(cfg.worker_count >= 0, f"config.data.worker_count={cfg.worker_count} must be >= 0")
    check(cfg.read_threads >= 1, f"config.data.read_threads={cfg.read_threads} must be >= 1")
    check(cfg.token_mel_ratio >= 0, f"config.data.token_mel_ratio={cfg.token_mel_ratio} must be >= 0")
    tasks.get(cfg.kind).validate(cfg, check)
    check(cfg.num_buckets >= 0, f"config.data.num_buckets={cfg.num_buckets} must be >= 0 (0 = bucket_lengths)")
    if cfg.num_buckets == 0:  # with num_buckets > 0 lengths fitted to the corpus replace bucket_lengths
        try:
            batching.make_buckets(cfg.bucket_lengths, cfg.max_frames_in_batch, cfg.batch_multiple or 1)
        except ValueError as e:
            raise ConfigError(f"config.{e}") from None


# ---------------------------------------------------------------------------------------------------- runtime


def split_meta(batch: dict) -> tuple[dict, dict]:
    """(arrays, metadata) of one pipeline element."""
    arrays = {k: v for k, v in batch.items() if k not in META_KEYS}
    meta = {k: batch[k] for k in META_KEYS if k in batch}
    return arrays, meta


def build_dataset(
    cfg,
    *,
    data_list: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    index: source.ParquetIndex | None = None,
) -> PlannedBatches:
    """The MapDataset of this process (``process_index/count`` default to jax's)."""
    validate(cfg)
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if index is None:
        files = source.read_data_list(data_list or cfg.data_list)
        task = tasks.get(cfg.kind)
        text_column = task.text_length_column(cfg)
        tokenizer = None
        if text_column is None:
            from sovits2_jax.text.tokenizer import get_tokenizer

            tokenizer = get_tokenizer(cfg.tokenizer)  # text lengths for planning (cheap next to audio)
        index = source.build_index(
            files, tokenizer=tokenizer, text_column=text_column, measure_audio=task.measures_audio(cfg)
        )
    return PlannedBatches(cfg, index, process_index=process_index, process_count=process_count)


def single_threaded_blas(*_) -> None:
    """Per-utterance mel matmuls are tiny: a multi-threaded BLAS only contends with the reading threads and the
    other workers (measured 50x slower on a loaded 2-core host), so data processes use one BLAS thread."""
    import threadpoolctl

    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpoolctl.threadpool_limits(limits=1, user_api="blas")


_BLAS_LIMIT = None


def to_iter_dataset(ds: PlannedBatches, cfg) -> grain.IterDataset:
    """Threaded reading in order, then ``mp_prefetch`` over ``cfg.worker_count`` processes."""
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch_batches))
    if cfg.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use their defaults
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size),
            worker_init_fn=single_threaded_blas,
        )
    return it


class Batches:
    """Iterator over this process's numpy batches (metadata stripped and skip counts accumulated), with
    Grain state for checkpoints (``iterator``) and ``global_batches`` for the mesh hand-off."""

    def __init__(self, cfg, dataset: PlannedBatches):
        self.cfg = cfg
        self.dataset = dataset
        if cfg.worker_count == 0:
            single_threaded_blas()  # processing runs in this process
        self.iterator = iter(to_iter_dataset(dataset, cfg))
        self.skipped: collections.Counter = collections.Counter()
        self.last_meta: dict = {}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        arrays, meta = split_meta(next(self.iterator))
        # mp_prefetch hands over grain SharedMemoryArrays: copied out, so each block is released (unlinked by
        # Grain's deletion thread) as soon as it is read, not when the batch is dropped, possibly at exit
        arrays = {k: np.array(v) if isinstance(v, np.ndarray) and type(v) is not np.ndarray else np.asarray(v)
                  for k, v in arrays.items()}  # fmt: skip
        self.skipped.update(meta.get("_skipped", {}))
        self.last_meta = meta
        return arrays

    def global_batches(self, mesh, prefetch: int = 2):
        """Global ``jax.Array`` batches on ``mesh``, ``prefetch`` of them in flight. ``last_meta`` then belongs to
        the newest local batch, which is up to ``prefetch`` ahead of the one yielded."""
        from sovits2_jax.data import mesh_feed

        arrays = (mesh_feed.to_global(a, mesh, tuple(self.cfg.batch_axes)) for a in self)
        yield from mesh_feed.prefetch(arrays, prefetch) if prefetch > 0 else arrays

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state) -> None:
        self.iterator.set_state(state)

    def close(self) -> None:
        """Stops the workers and frees the batches they left in shared memory. Grain's worker iterators that were
        started ahead unlink theirs only when collected; at interpreter exit that fails and Python's resource
        tracker warns of leaked shared_memory objects, so they are collected here."""
        iterator, self.iterator = self.iterator, None
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        del iterator, close
        gc.collect()
        _wait_for_shared_memory_release()


def _wait_for_shared_memory_release(timeout_s: float = 60.0) -> None:
    """Waits until Grain's deletion thread has unlinked every shared-memory block released so far: it works
    through them in order on one thread, so a no-op queued now finishes after them (an exit right after a close
    would otherwise leave them to the resource tracker)."""
    from grain._src.python.ipc import shared_memory_array  # no public handle on the deletion thread

    deleter = getattr(shared_memory_array.SharedMemoryArray, "_del_thread_pool", None)
    if deleter is not None:
        deleter.apply_async(int).get(timeout=timeout_s)


def make_batches(cfg, **kwargs) -> Batches:
    return Batches(cfg, build_dataset(cfg, **kwargs))


# ------------------------------------------------------------------------------------------------------- CLI


def main(argv) -> int:
    """The inspection CLI: reads ``--num_batches`` batches and prints speed, buckets, padding and skip counts."""
    import time

    from absl import flags

    from sovits2_jax.validation import ConfigError

    f = flags.FLAGS
    cfg = f.config.data if "data" in f.config else f.config
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data_list = f.data_list or cfg.data_list
    if not data_list:
        print("error: give --data_list or config.data.data_list", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    batches = make_batches(cfg, data_list=data_list, process_index=0, process_count=1)
    t_index = time.perf_counter() - t0
    task = batches.dataset.task
    shapes, real, total, dumped = collections.Counter(), 0, 0, collections.defaultdict(list)
    samples = 0
    t0 = time.perf_counter()
    n = 0
    try:
        for n, batch in enumerate(batches, start=1):
            shapes[tuple((k, v.shape) for k, v in sorted(batch.items()))] += 1
            samples += task.num_samples(batch)
            r, t = task.padding(batch)
            real, total = real + r, total + t
            if f.dump:
                for k, v in batch.items():
                    dumped[k].append(v)
            if n >= f.num_batches:
                break
    finally:
        batches.close()
    dt = time.perf_counter() - t0
    print(
        f"index: {len(batches.dataset.index)} rows in {batches.dataset.index.num_groups} row groups ({t_index:.2f} s)"
    )
    print(f"buckets: {[(b.batch, b.length) for b in batches.dataset.buckets]}")
    print(f"batches: {n} in {dt:.2f} s = {n / max(dt, 1e-9):.2f} batches/s, {samples / max(dt, 1e-9):.1f} samples/s")
    print(f"padding: {100.0 * (1 - real / max(total, 1)):.1f}% of {total} positions")
    print(f"distinct shapes: {len(shapes)}")
    print("skipped: " + (", ".join(f"{k}={v}" for k, v in sorted(batches.skipped.items())) or "none"))
    if f.dump:
        out = {}
        for k, vs in dumped.items():
            for i, v in enumerate(vs):
                out[f"{i:05d}/{k}"] = v
        np.savez(f.dump, **out)
        print(f"dumped {n} batches to {f.dump}")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "configs/data.py:KIND", lock_config=True)
    flags.DEFINE_string("data_list", "", "data.list of parquet files (overrides config.data.data_list)")
    flags.DEFINE_integer("num_batches", 20, "batches to read")
    flags.DEFINE_string("dump", "", "write the batches to this .npz")
    logging.basicConfig(level=logging.WARNING)
    app.run(lambda argv: sys.exit(main(argv)))
