"""What a model family tells the generic pipeline: the columns it reads, the length each row is bucketed by,
the per-row processing steps and the batch fields. ``Task`` implements the bucketed layout (one row per batch
slot, padded to the bucket length); a packed family overrides ``plan`` and ``load``."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from sovits2_jax.data import batching, steps

log = logging.getLogger("sovits2_jax.data.pipeline")

Step = Callable[[dict, np.random.Generator], dict]
Field = tuple[str, "int | None", tuple[int, ...], type]  # name, padded length (None: not padded), step shape, dtype


def guarded(skipped: collections.Counter, what: Callable[[], str], fn, *args):
    """``fn(*args)``, or None with the reason counted: a broken row must not stop training."""
    try:
        return fn(*args)
    except steps.SkipSample as e:
        skipped[str(e)] += 1
    except Exception as e:
        log.warning("data: %s failed: %r", what(), e)
        skipped[f"error: {e.__class__.__name__}"] += 1
    return None


class Task:
    """One family of ``config.data.kind``; the subclass sets the class attributes and ``lengths``/``steps``/
    ``family_fields``. ``cfg`` is the data section (a ConfigDict), ``index`` the corpus's ``source.ParquetIndex``."""

    # config.data defaults of this family (bucket_lengths and max_frames_in_batch at least; see configs/data.py)
    defaults: ClassVar[dict] = {}
    reads_speech_token = True  # the speech_token column (unless config.data.online_tokenization)
    reads_audio = False  # the audio_data column (always read with online_tokenization)
    reads_embedding = False  # utt_embedding / spk_embedding -> batch "embedding"
    fits_buckets = False  # config.data.num_buckets > 0 fits the bucket lengths to the corpus
    primary = "speech_token"  # the batch field whose padding the inspection CLI reports
    unsized_fields: tuple[str, ...] = ()  # padded fields without an ``X_len``

    def __init__(self, cfg, index):
        self.cfg = cfg
        self.index = index

    @staticmethod
    def validate(cfg, check: Callable[[bool, str], None]) -> None:
        """Family-specific checks of the data section (``check(ok, message)``)."""

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def needs_speech_token(self) -> bool:
        return self.reads_speech_token and not self.cfg["online_tokenization"]

    @classmethod
    def text_length_column(cls, cfg) -> str | None:
        """A list column of text ids whose lengths the index plans with; None: ``config.data.tokenizer``'s ids of
        the ``text`` column."""
        return None

    @classmethod
    def measures_audio(cls, cfg) -> bool:
        """Whether the index must measure audio durations (rows are bucketed by them)."""
        return False

    def columns(self, available: tuple[str, ...]) -> tuple[str, ...]:
        cols = ["utt", "spk", "text"]
        if self.needs_speech_token or "speech_token" in available:
            cols.append("speech_token")
        if self.reads_audio or self.cfg["online_tokenization"]:
            cols.append("audio_data")
        if self.reads_embedding:
            cols += ["utt_embedding", "spk_embedding"]
        return tuple(cols)

    # ------------------------------------------------------------------------------------------------ plans

    def plan_filters(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows the load-time steps would certainly drop, known from the index (so they leave no padding row):
        empty speech tokens, text-token bounds, and durations outside the filter by more than one 25 Hz token."""
        ix, f = self.index, self.cfg["filter"]
        tok, text = ix.speech_token_len[rows], ix.text_token_len[rows]
        skip = {}
        if self.needs_speech_token:
            skip["empty speech tokens"] = tok == 0
        frames = tok.astype(np.float64) * 4.0  # 10 ms frames of 25 Hz tokens
        skip["too short"] = (tok > 0) & (frames + 4 < f["min_length"])
        skip["too long"] = (tok > 0) & (frames - 4 > f["max_length"])
        skip["too few text tokens"] = (text >= 0) & (text < f["token_min_length"])
        skip["too many text tokens"] = (text >= 0) & (text > f["token_max_length"])
        return skip

    def lengths(self, rows: np.ndarray, skip: dict[str, np.ndarray]) -> np.ndarray:
        """Plan-time bucketing length per row (may add skip masks to ``skip``)."""
        raise NotImplementedError

    def row_lengths(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Plan-time bucketing length per row, and plan-time skip masks by reason."""
        skip = self.plan_filters(rows)
        return self.lengths(rows, skip), skip

    def bucket_multiple(self) -> int:
        """Fitted bucket lengths are multiples of this."""
        return 1

    def plan(self, rows, epoch: int, shard: int, skips: collections.Counter, buckets) -> list:
        """One shard's batches of one epoch from its rows in order (skipped rows counted in ``skips``)."""
        lengths, skip_masks = self.row_lengths(rows)
        keep = np.ones(len(rows), bool)
        for reason, m in skip_masks.items():
            skips[reason] += int(np.sum(m & keep))
            keep &= ~m
        too_long = keep & (batching.bucket_ids(lengths, buckets) < 0)
        skips["longer than the largest bucket"] += int(too_long.sum())
        keep &= ~too_long
        examples = [(int(r),) for r in rows[keep]]
        return batching.bucket_plan(examples, lengths[keep], buckets, drop_remainder=self.cfg["drop_remainder"])

    # ------------------------------------------------------------------------------------------------ loading

    def tokenizer(self):
        from sovits2_jax.text.tokenizer import get_tokenizer

        return get_tokenizer(self.cfg["tokenizer"])

    def steps(self) -> list[Step]:
        """The per-row processing chain; a step raises ``steps.SkipSample`` to drop the row."""
        raise NotImplementedError

    def process(self, sample: dict, rng: np.random.Generator) -> dict:
        for step in self.steps():
            sample = step(sample, rng)
        return sample

    def load(self, reader, step: int, bucket: batching.Bucket, slots, skipped: collections.Counter, row_offset=0):
        """(batch, utterance per row) of one planned batch; ``slots`` holds one ``(row,)`` example per slot.
        A row's random draws are keyed by its position in the global batch (``row_offset`` + i), so they do not
        depend on how many processes share the batch."""
        samples, utts = [], []
        for i, slot in enumerate(slots):
            sample = None
            if slot:
                row = slot[0][-1]
                rng = np.random.default_rng([self.cfg["seed"] & 0xFFFFFFFF, step, row_offset + i, 7])
                what = lambda row=row: f"row {row} ({self.index.utt[row]})"
                sample = guarded(skipped, what, self._load_one, reader, row, rng, bucket)
            utts.append(self.index.utt[slot[0][-1]] if slot and sample is not None else "")
            samples.append(sample)
        return self.assemble(samples, bucket), utts

    def _load_one(self, reader, row: int, rng, bucket) -> dict:
        sample = self.process(reader.read(row), rng)
        self.check_fits(sample, bucket)
        return sample

    def family_fields(self, length: int) -> list[Field]:
        raise NotImplementedError

    def fields(self, bucket: batching.Bucket) -> list[Field]:
        """(name, padded length or None, per-step shape, dtype) of every batched sample array."""
        c, out = self.cfg, self.family_fields(bucket.length)
        if c["online_tokenization"]:
            out.append(("whisper_feat", 2 * bucket.length + 4, (c["whisper_mels"],), np.float32))
        if self.reads_embedding:
            out.append(("embedding", None, (c["embedding_dim"],), np.float32))
        return out

    def check_fits(self, sample: dict, bucket: batching.Bucket) -> None:
        """The plan sized the bucket from the index; a sample that came out longer (e.g. a duration estimate off
        by a frame) is skipped rather than breaking the batch."""
        for name, flen, _, _ in self.fields(bucket):
            if flen is not None and len(sample[name]) > flen:
                raise steps.SkipSample("longer than its bucket")

    def assemble(self, samples: list[dict | None], bucket: batching.Bucket) -> dict:
        out = {"valid": np.asarray([s is not None for s in samples])}
        for name, flen, shape, dtype in self.fields(bucket):
            arrays = [None if s is None else np.asarray(s[name]) for s in samples]
            out[name] = batching.pad_stack(arrays, flen, shape, dtype)
            if flen is not None and name not in self.unsized_fields:
                out[name + "_len"] = np.asarray([0 if a is None else a.shape[0] for a in arrays], np.int32)
        return out

    # ------------------------------------------------------------------------------------------------ steps

    def read_tokens(self, s: dict, rng=None) -> dict:
        s = steps.tokenize(s, self.tokenizer())
        return steps.check_tokens(s, need_speech_token=self.needs_speech_token)

    def decode(self, s: dict, rng=None) -> dict:
        return steps.decode_audio(s)

    def filter(self, s: dict, rng=None) -> dict:
        return steps.filter_lengths(s, **self.cfg["filter"].to_dict())

    def resample(self, s: dict, rng=None) -> dict:
        return steps.resample(s, sample_rate=self.cfg["sample_rate"], min_sample_rate=self.cfg["min_sample_rate"])

    def mel(self, s: dict, rng=None, *, token_mel_ratio: int = 0) -> dict:
        from sovits2_jax.audio.mel import MelConfig

        mel = MelConfig(sampling_rate=self.cfg["sample_rate"], **self.cfg["mel"].to_dict())
        return steps.compute_mel(s, mel_config=mel, token_mel_ratio=token_mel_ratio)

    def whisper(self, s: dict, rng=None) -> dict:
        return steps.whisper_feat(s, n_mels=self.cfg["whisper_mels"])

    def audio_steps(self) -> list[Step]:
        """Tokens, then the decoded, length-filtered and resampled audio: how an audio family's chain starts."""
        return [self.read_tokens, self.decode, self.filter, self.resample]

    def online_steps(self) -> list[Step]:
        """The whisper log-mel for the S3 tokenizer, with ``online_tokenization``."""
        return [self.whisper] if self.cfg["online_tokenization"] else []

    def embedding(self, s: dict, rng=None) -> dict:
        c = self.cfg
        return steps.parse_embedding(
            s, normalize=c["normalize_embedding"], dim=c["embedding_dim"], use_spk_embedding=c["use_spk_embedding"]
        )

    # ------------------------------------------------------------------------------------------------ inspection

    def num_samples(self, batch: dict) -> int:
        return int(batch["valid"].sum())

    def padding(self, batch: dict) -> tuple[int, int]:
        """(real, total) positions of the batched primary axis."""
        x, lengths = batch[self.primary], batch.get(self.primary + "_len")
        real = lengths.sum() if lengths is not None else batch["valid"].sum() * x.shape[1]
        return int(real), int(x.shape[0] * x.shape[1])
