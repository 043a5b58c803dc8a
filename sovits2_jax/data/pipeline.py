"""Grain input pipeline: Parquet rows -> CosyVoice processing steps -> bucketed / packed batches -> the mesh.

    python -m sovits2_jax.data.pipeline --config=configs/data.py:flow --data_list=data/train/data.list \
        --num_batches=50 [--dump=batches.npz] [--config.data.max_frames_in_batch=4000]

The dataset is a ``grain.MapDataset`` whose element ``i`` is this process's share of global step ``i``: the batch
plan of every epoch is computed from the Parquet index alone (row groups permuted and sharded per process, rows
shuffled in windows, bucketed under the frame budget or packed, shapes kept in lockstep across processes), so the
order is a pure function of (seed, step), the iterator state is one integer per prefetch worker, and a restored
iterator yields exactly the batches the uninterrupted run would have. Unusable rows become padding rows
(``valid`` False) and are counted by reason.

Batch keys (numpy, leading dim = local batch; every ``X_len`` counts the valid steps of ``X``):
- ``llm`` (CosyVoice2 ``Qwen2LM``): text_token [B, Lt], speech_token [B, L], embedding [B, D]; with ``dpo``
  also reject_speech_token [B, L] (the Parquet's ``reject_speech_token`` column).
- ``flow``: speech_feat [B, L, 80], speech_token [B, L / token_mel_ratio], embedding [B, D] (utt or spk, L2-normed),
  cond_len [B] (prompt-prefix frames drawn like the reference), whisper_feat [B, 2L + 4, 128] when
  ``online_tokenization``.
- ``hift``: speech [B, truncate_length], speech_feat [B, T, 80], pitch_feat [B, T].
- ``gpt_sovits2`` (packed): kinds / ids / targets / text_segments / segment_ids / positions [B, L], lengths and
  num_segments [B]; pass ``segment_ids`` to the Speech LM so no position sees another example.
All have ``valid`` [B]. A lockstep filler batch (multi-process, see ``batching.lockstep``) may have no valid row,
so losses must guard their denominators. The state of ``Batches`` (and of grain's iterator) depends on
``worker_count``: restore with the same value.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
import random
import sys
import threading

import grain
import numpy as np

from sovits2_jax.data import batching, order, packing, prompts, source, steps

log = logging.getLogger(__name__)

KINDS = ("llm", "flow", "hift", "gpt_sovits2")
META_KEYS = ("_skipped", "_utts", "_step", "_epoch")


def validate(cfg) -> None:
    """Rejects inconsistent data settings with a message naming the key."""
    from sovits2_jax.validation import ConfigError

    def check(ok, msg):
        if not ok:
            raise ConfigError(msg)

    check(cfg.kind in KINDS, f"config.data.kind={cfg.kind!r} not in {KINDS}")
    check(cfg.num_epochs == -1 or cfg.num_epochs >= 1, f"config.data.num_epochs={cfg.num_epochs} must be -1 or >= 1")
    check(cfg.window_groups >= 0, f"config.data.window_groups={cfg.window_groups} must be >= 0")
    check(cfg.worker_count >= 0, f"config.data.worker_count={cfg.worker_count} must be >= 0")
    check(cfg.read_threads >= 1, f"config.data.read_threads={cfg.read_threads} must be >= 1")
    check(cfg.token_mel_ratio >= 0, f"config.data.token_mel_ratio={cfg.token_mel_ratio} must be >= 0")
    check(1 <= cfg.min_prompts <= cfg.max_prompts, "config.data.min_prompts must be in [1, config.data.max_prompts]")
    check(cfg.text_ratio > 0, f"config.data.text_ratio={cfg.text_ratio} must be positive")
    if cfg.kind == "hift":
        check(len(cfg.bucket_lengths) == 1, "config.data.bucket_lengths: hift crops to one length, give one bucket")
        check(
            cfg.bucket_lengths[0] * cfg.mel.hop_size == cfg.truncate_length,
            f"config.data.bucket_lengths[0]={cfg.bucket_lengths[0]} must be truncate_length / mel.hop_size "
            f"= {cfg.truncate_length / cfg.mel.hop_size}",
        )
    if cfg.kind == "gpt_sovits2":
        check(len(cfg.bucket_lengths) == 1, "config.data.bucket_lengths: gpt_sovits2 packs into one row length")
    if cfg.kind == "flow" and cfg.token_mel_ratio:
        bad = [x for x in cfg.bucket_lengths if x % cfg.token_mel_ratio]
        check(not bad, f"config.data.bucket_lengths {bad} must be multiples of token_mel_ratio={cfg.token_mel_ratio}")
    check(cfg.num_buckets >= 0, f"config.data.num_buckets={cfg.num_buckets} must be >= 0 (0 = bucket_lengths)")
    try:
        batching.make_buckets(cfg.bucket_lengths, cfg.max_frames_in_batch, cfg.batch_multiple)
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None


def _columns(cfg, available: tuple[str, ...]) -> tuple[str, ...]:
    cols = ["utt", "spk", "text"]
    if (cfg.kind in ("llm", "flow", "gpt_sovits2") and not cfg.online_tokenization) or "speech_token" in available:
        cols.append("speech_token")
    if cfg.kind in ("flow", "hift") or cfg.online_tokenization:
        cols.append("audio_data")
    if cfg.kind in ("llm", "flow"):
        cols += ["utt_embedding", "spk_embedding"]
    if cfg.kind == "llm" and cfg.dpo:
        cols.append("reject_speech_token")
    return tuple(cols)


class PlannedBatches(grain.MapDataset):
    """Element ``i``: this process's batch at global step ``i`` (numpy dict plus ``_``-prefixed metadata)."""

    def __init__(self, cfg, index: source.ParquetIndex, *, process_index: int = 0, process_count: int = 1):
        super().__init__([])
        validate(cfg)
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        import ml_collections

        self.cfg = ml_collections.ConfigDict(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
        self.index = index
        self.process_index = process_index
        self.process_count = process_count
        self.reader = source.RowReader(index, _columns(cfg, index.columns), cache_mb=cfg.cache_mb)
        usable = (index.speech_token_len > 0) & (index.text_token_len != 0)
        self.speakers = prompts.SpeakerRows(index.spk, index.group, usable=usable)
        self._init_plans()
        self.buckets = batching.make_buckets(self._bucket_lengths(), cfg.max_frames_in_batch, cfg.batch_multiple)

    def _bucket_lengths(self) -> list[int]:
        """The configured lengths, or (``num_buckets`` > 0) lengths fitted to this corpus's length histogram:
        a function of the index only, so every process gets the same buckets."""
        c = self.cfg
        if c["num_buckets"] <= 0 or c["kind"] not in ("llm", "flow"):
            return list(c["bucket_lengths"])
        lengths, skips = self._row_lengths(np.arange(len(self.index)))
        keep = np.ones(len(lengths), bool)
        for m in skips.values():
            keep &= ~m
        longest = c["max_frames_in_batch"] // c["batch_multiple"]
        lengths = lengths[keep & (lengths <= longest)]
        if lengths.size == 0:
            raise ValueError(f"no utterance fits max_frames_in_batch={c['max_frames_in_batch']}; nothing to bucket")
        multiple = max(c["token_mel_ratio"], 1) if c["kind"] == "flow" else 1
        fitted = batching.fit_bucket_lengths(lengths, c["num_buckets"], multiple)
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

    @property
    def c(self):
        return self.cfg

    # ------------------------------------------------------------------------------------------------ plans

    def _row_lengths(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Plan-time bucketing length per row, and plan-time skip masks by reason."""
        c, ix = self.cfg, self.index
        tok = ix.speech_token_len[rows]
        skip = self._plan_filters(rows)
        if c["kind"] == "hift":
            return np.full(len(rows), c["bucket_lengths"][0]), skip
        if c["kind"] == "flow":
            if c["online_tokenization"] or tok.min(initial=1) < 0:
                secs = ix.audio_seconds[rows]
                lengths = np.ceil(secs * c["sample_rate"] / c["mel"]["hop_size"]).astype(np.int64) + 1
                lengths = np.where(secs < 0, 1, lengths)
            else:
                lengths = tok.astype(np.int64) * max(c["token_mel_ratio"], 1)
        else:  # llm: speech tokens, widened so the text fits its padded share
            text = np.maximum(ix.text_token_len[rows], 0)
            lengths = np.maximum(tok, np.ceil(text / c["text_ratio"]).astype(np.int64))
            if c["dpo"]:
                reject = ix.reject_token_len[rows]
                skip["empty rejected speech tokens"] = reject <= 0
                lengths = np.maximum(lengths, reject)
        return lengths, skip

    def _plan_filters(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows the load-time steps would certainly drop, known from the index (so they leave no padding row):
        empty speech tokens, text-token bounds, and durations outside the filter by more than one 25 Hz token."""
        c, ix = self.cfg, self.index
        tok, text = ix.speech_token_len[rows], ix.text_token_len[rows]
        f = c["filter"]
        skip = {}
        if c["kind"] in ("llm", "flow", "gpt_sovits2") and not c["online_tokenization"]:
            skip["empty speech tokens"] = tok == 0
        frames = tok.astype(np.float64) * 4.0  # 10 ms frames of 25 Hz tokens
        skip["too short"] = (tok > 0) & (frames + 4 < f["min_length"])
        skip["too long"] = (tok > 0) & (frames - 4 > f["max_length"])
        skip["too few text tokens"] = (text >= 0) & (text < f["token_min_length"])
        skip["too many text tokens"] = (text >= 0) & (text > f["token_max_length"])
        return skip

    def _epoch_plan(self, epoch: int):
        """(steps, plan-time skip counts of this process) for ``epoch``: steps = [(bucket, slots or None)]."""
        c = self.cfg
        groups = order.process_groups(self.index.num_groups, c["seed"], epoch, self.process_count)
        plans, my_skips = [], collections.Counter()
        for p in range(self.process_count):
            rows = order.process_order(
                self._rows_of_group, groups[p], seed=c["seed"], epoch=epoch, process=p, window_groups=c["window_groups"]
            )
            skips = collections.Counter()
            if c["kind"] == "gpt_sovits2":
                examples, lengths = self._gpt_sovits2_examples(rows, epoch, p, skips)
                plan = batching.pack_plan(examples, lengths, self.buckets[0], drop_remainder=c["drop_remainder"])
            else:
                lengths, skip_masks = self._row_lengths(rows)
                keep = np.ones(len(rows), bool)
                for reason, m in skip_masks.items():
                    skips[reason] += int(np.sum(m & keep))
                    keep &= ~m
                too_long = keep & (batching.bucket_ids(lengths, self.buckets) < 0)
                skips["longer than the largest bucket"] += int(too_long.sum())
                keep &= ~too_long
                examples = [(int(r),) for r in rows[keep]]
                plan = batching.bucket_plan(examples, lengths[keep], self.buckets, drop_remainder=c["drop_remainder"])
            plans.append(plan)
            if p == self.process_index:
                my_skips = +skips
        merged = batching.lockstep(plans)
        return [(b, slots[self.process_index]) for b, slots in merged], dict(my_skips)

    def _gpt_sovits2_examples(self, rows, epoch, p, skips):
        c, ix = self.cfg, self.index
        rnd = random.Random(int(order.epoch_rng(c["seed"], epoch, 2, p).integers(2**63)))
        limit = self.buckets[0].length
        # a (text, speech) block costs text + speech + 2 positions (task_id, and sos or the previous eos)
        block = np.maximum(ix.text_token_len, 0).astype(np.int64) + ix.speech_token_len + 2
        examples, lengths = [], []
        for r in rows.tolist():
            if ix.speech_token_len[r] <= 0:
                skips["empty speech tokens"] += 1
                continue
            if ix.text_token_len[r] == 0:
                skips["too few text tokens"] += 1
                continue
            refs = self.speakers.draw(rnd, r, min_prompts=c["min_prompts"], max_prompts=c["max_prompts"])
            if refs is None:
                skips["no same-speaker prompt"] += 1
                continue
            ex = (*refs, r)
            n = int(block[list(ex)].sum())
            while n > limit and len(ex) - 1 > c["min_prompts"]:
                n -= int(block[ex[0]])
                ex = ex[1:]  # fewer references rather than losing the target
            if n > limit:
                skips["longer than the pack length"] += 1
                continue
            examples.append(ex)
            lengths.append(n)
        return examples, np.asarray(lengths, np.int64)

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

    # ------------------------------------------------------------------------------------------------ loading

    def _process(self, row: int, rng: np.random.Generator) -> dict:
        c = self.c
        s = self.reader.read(row)
        tok = self._tokenizer()
        s = steps.tokenize(s, tok)
        need_tokens = c.kind in ("llm", "flow", "gpt_sovits2") and not c.online_tokenization
        s = steps.check_tokens(s, need_speech_token=need_tokens)
        if c.kind == "llm" and c.dpo:
            rej = s.get("reject_speech_token")
            if rej is None or len(rej) == 0:
                raise steps.SkipSample("empty rejected speech tokens")
            s["reject_speech_token"] = np.asarray(rej, np.int32)
        if c.kind in ("flow", "hift") or c.online_tokenization:
            s = steps.decode_audio(s)
        if c.kind != "gpt_sovits2":
            s = steps.filter_lengths(s, **c.filter.to_dict())
        if "speech" in s:
            s = steps.resample(s, sample_rate=c.sample_rate, min_sample_rate=c.min_sample_rate)
        if c.kind == "hift":
            s = steps.truncate(s, length=c.truncate_length, rng=rng)
        if c.kind in ("flow", "hift"):
            from sovits2_jax.audio.mel import MelConfig

            mel = MelConfig(sampling_rate=c.sample_rate, **c.mel.to_dict())
            s = steps.compute_mel(s, mel_config=mel, token_mel_ratio=c.token_mel_ratio if c.kind == "flow" else 0)
        if c.kind == "hift":
            s = steps.compute_f0(s, hop_size=c.mel.hop_size)
        if c.online_tokenization and "speech" in s:
            s = steps.whisper_feat(s, n_mels=c.whisper_mels)
        if c.kind in ("llm", "flow"):
            s = steps.parse_embedding(
                s, normalize=c.normalize_embedding, dim=c.embedding_dim, use_spk_embedding=c.use_spk_embedding
            )
        return s

    def _tokenizer(self):
        from sovits2_jax.text.tokenizer import get_tokenizer

        return get_tokenizer(self.cfg["tokenizer"])

    def _load(self, step: int, bucket: batching.Bucket, slots) -> dict:
        c = self.cfg
        skipped: collections.Counter = collections.Counter()
        if slots is None:  # this process has nothing for this global step's shape: a padding batch
            slots = [[] for _ in range(bucket.batch)]
        slots = list(slots) + [[] for _ in range(bucket.batch - len(slots))]
        utts = []
        if c["kind"] == "gpt_sovits2":
            rows = []
            for slot in slots:
                loaded = [(ex, self._gpt_sovits2_one(ex, skipped)) for ex in slot]
                rows.append([seq for _, seq in loaded])
                utts.append([self.index.utt[ex[-1]] for ex, seq in loaded if seq is not None])  # segment order
            batch = packing.pack_rows(rows, bucket.length)
            batch["valid"] = batch["num_segments"] > 0
        else:
            samples = []
            for i, slot in enumerate(slots):
                sample = None
                if slot:
                    row = slot[0][-1]
                    rng = np.random.default_rng([c["seed"] & 0xFFFFFFFF, step, i, 7])
                    try:
                        sample = self._process(row, rng)
                        self._check_fits(sample, bucket)
                        if c["flow_prompt"] and "speech_feat" in sample:
                            sample["cond_len"] = prompts.flow_prompt_len(rng, sample["speech_feat"].shape[0])
                    except steps.SkipSample as e:
                        skipped[str(e)] += 1
                    except Exception as e:  # a broken row must not stop training; it is counted by type
                        log.warning("data: row %s (%s) failed: %r", row, self.index.utt[row], e)
                        skipped[f"error: {e.__class__.__name__}"] += 1
                utts.append(self.index.utt[slot[0][-1]] if slot and sample is not None else "")
                samples.append(sample)
            batch = self._assemble(samples, bucket)
        batch["_skipped"] = skipped
        batch["_utts"] = utts
        batch["_step"] = step
        return batch

    def _gpt_sovits2_one(self, ex, skipped):
        tok = self._tokenizer()
        texts, speeches = [], []
        try:
            for r in ex:
                s = self.reader.read(r)
                s = steps.check_tokens(steps.tokenize(s, tok), need_speech_token=True)
                if len(s["text_token"]) == 0:
                    raise steps.SkipSample("too few text tokens")
                texts.append(s["text_token"])
                speeches.append(s["speech_token"])
        except steps.SkipSample as e:
            skipped[str(e)] += 1
            return None
        except Exception as e:  # a broken row must not stop training; it is counted by type
            log.warning("data: example %s failed: %r", [self.index.utt[r] for r in ex], e)
            skipped[f"error: {e.__class__.__name__}"] += 1
            return None
        out = packing.gpt_sovits2_example(texts, speeches, speech_token_size=self.cfg["speech_token_size"])
        if len(out["kinds"]) > self.buckets[0].length:  # text lengths changed since indexing
            skipped["longer than the pack length"] += 1
            return None
        return out

    def _fields(self, bucket: batching.Bucket) -> list[tuple[str, int | None, tuple[int, ...], type]]:
        """(name, padded length or None, per-step shape, dtype) of every batched sample array."""
        c, length = self.cfg, bucket.length
        out = []
        if c["kind"] == "llm":
            out.append(("text_token", max(c["text_min_pad"], math.ceil(length * c["text_ratio"])), (), np.int32))
            out.append(("speech_token", length, (), np.int32))
            if c["dpo"]:
                out.append(("reject_speech_token", length, (), np.int32))
        if c["kind"] in ("flow", "hift"):
            out.append(("speech_feat", length, (c["mel"]["num_mels"],), np.float32))
        if c["kind"] == "flow" and not c["online_tokenization"]:
            out.append(("speech_token", length // max(c["token_mel_ratio"], 1), (), np.int32))
        if c["kind"] == "hift":
            out.append(("speech", c["truncate_length"], (), np.float32))
            out.append(("pitch_feat", length, (), np.float32))
        if c["online_tokenization"]:
            out.append(("whisper_feat", 2 * length + 4, (c["whisper_mels"],), np.float32))
        if c["kind"] in ("llm", "flow"):
            out.append(("embedding", None, (c["embedding_dim"],), np.float32))
        return out

    def _check_fits(self, sample: dict, bucket: batching.Bucket) -> None:
        """The plan sized the bucket from the index; a sample that came out longer (e.g. a duration estimate off
        by a frame) is skipped rather than breaking the batch."""
        for name, flen, _, _ in self._fields(bucket):
            if flen is not None and len(sample[name]) > flen:
                raise steps.SkipSample("longer than its bucket")

    def _assemble(self, samples, bucket: batching.Bucket) -> dict:
        out = {"valid": np.asarray([s is not None for s in samples])}
        for name, flen, shape, dtype in self._fields(bucket):
            arrays = [None if s is None else np.asarray(s[name]) for s in samples]
            out[name] = batching.pad_stack(arrays, flen, shape, dtype)
            if flen is not None and name not in ("pitch_feat",):
                out[name + "_len"] = np.asarray([0 if a is None else a.shape[0] for a in arrays], np.int32)
        if self.cfg["kind"] == "flow" and self.cfg["flow_prompt"]:
            out["cond_len"] = np.asarray([0 if s is None else s["cond_len"] for s in samples], np.int32)
        return out


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
        from sovits2_jax.text.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(cfg.tokenizer)  # text lengths for planning (cheap next to audio)
        index = source.build_index(
            files, tokenizer=tokenizer, measure_audio=cfg.kind == "flow" and cfg.online_tokenization
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
        # mp_prefetch hands over grain SharedMemoryArray subclasses: plain ndarray views pickle and print normally
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
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
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


def make_batches(cfg, **kwargs) -> Batches:
    return Batches(cfg, build_dataset(cfg, **kwargs))


# ------------------------------------------------------------------------------------------------------- CLI


def padding_stats(batch: dict, kind: str) -> tuple[int, int]:
    """(real, total) positions of the batched primary axis."""
    if kind == "gpt_sovits2":
        return int(batch["lengths"].sum()), int(batch["kinds"].size)
    key = {"llm": "speech_token", "flow": "speech_feat", "hift": "speech_feat"}[kind]
    return int(batch[key + "_len"].sum()) if key + "_len" in batch else int(
        batch["valid"].sum() * batch[key].shape[1]
    ), int(batch[key].shape[0] * batch[key].shape[1])


def main(argv) -> int:
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
    shapes, real, total, dumped = collections.Counter(), 0, 0, collections.defaultdict(list)
    samples = 0
    t0 = time.perf_counter()
    n = 0
    try:
        for n, batch in enumerate(batches, start=1):
            shapes[tuple((k, v.shape) for k, v in sorted(batch.items()))] += 1
            samples += int(batch["num_segments"].sum() if cfg.kind == "gpt_sovits2" else batch["valid"].sum())
            r, t = padding_stats(batch, cfg.kind)
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
