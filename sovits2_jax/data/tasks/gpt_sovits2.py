"""GPT-SoVITS2 zero-shot LM: same-speaker ``x1 + y1 + ... + xn -> yn`` examples packed into rows of one length.

Batch (packed): kinds / ids / targets / text_segments / segment_ids / positions [B, L], lengths and
num_segments [B], valid [B]; pass ``segment_ids`` to the Speech LM so no position sees another example.

Text (``text_source``): "bpe" tokenizes the ``text`` column with ``tokenizer``; "bge_m3" reads the text encoder's
ids and per-token features from the columns ``data/prep/text_features.py`` adds (``data/text_columns.py``), and the
batch also holds ``text_features`` [B, L, text_feature_dim] float16: each text position's feature, zero elsewhere.

Several codebooks per frame (``num_codebooks`` K > 1, the AR's ``config.model.num_codebooks``): the speech codes come
from ``codes_column`` (``data/code_columns.py``, K rows per utterance) instead of ``speech_token`` (which is then not
read): row 0 is the sequence's speech ids, rows 1..K-1 give ``codes_extra`` / ``targets_extra`` [B, L, K-1] (-1 =
none / ignored). The plan sizes examples by the codes' lengths and never draws a row whose codes are null. A shard
without the column or with another K is refused (ConfigError).
"""

from __future__ import annotations

import random
from typing import ClassVar

import numpy as np

from sovits2_jax.data import batching, code_columns, order, packing, prompts, steps, text_columns
from sovits2_jax.data.tasks import base

TEXT_SOURCES = ("bpe", "bge_m3")


class GptSovits2Task(base.Task):
    defaults: ClassVar[dict] = dict(
        bucket_lengths=[2048],  # packed positions per row
        max_frames_in_batch=16384,
        min_prompts=1,  # min_prompts..max_prompts same-speaker references per target
        max_prompts=3,
        text_source="bpe",  # "bpe": `tokenizer` over `text`; "bge_m3": the text encoder's columns (ids, features)
        text_encoder="",  # bge_m3: the directory the columns were made with (the AR's text sizes come from it)
        text_feature_dim=0,  # bge_m3: the features' width (the gpt_sovits2_ar family sets it from text_encoder)
        num_codebooks=1,  # > 1: speech codes per frame read from codes_column (= config.model.num_codebooks)
        codes_column=code_columns.COLUMN,
    )
    primary = "kinds"

    @staticmethod
    def validate(cfg, check) -> None:
        check(len(cfg.bucket_lengths) == 1, "config.data.bucket_lengths: gpt_sovits2 packs into one row length")
        ok = 1 <= cfg.min_prompts <= cfg.max_prompts
        check(ok, "config.data.min_prompts must be in [1, config.data.max_prompts]")
        check(cfg.num_codebooks >= 1, f"config.data.num_codebooks={cfg.num_codebooks} must be >= 1")
        check(cfg.text_source in TEXT_SOURCES, f"config.data.text_source={cfg.text_source!r} not in {TEXT_SOURCES}")
        if cfg.text_source == "bge_m3":
            check(cfg.text_feature_dim >= 1, f"config.data.text_feature_dim={cfg.text_feature_dim} must be >= 1 with "
                  "text_source='bge_m3': the text encoder's width (the gpt_sovits2_ar family reads it from "
                  "config.data.text_encoder)")  # fmt: skip

    @classmethod
    def text_length_column(cls, cfg) -> str | None:
        return text_columns.TOKEN if cfg["text_source"] == "bge_m3" else None

    def __init__(self, cfg, index):
        super().__init__(cfg, index)
        self.feature_dim = cfg["text_feature_dim"] if cfg["text_source"] == "bge_m3" else 0
        if self.feature_dim:
            text_columns.check_files(self.index.files, self.feature_dim)
        self.num_extra = cfg["num_codebooks"] - 1
        self.speech_len = index.speech_token_len  # frames per row: speech tokens, or codes (0 where null)
        if self.num_extra:
            code_columns.check_files(self.index.files, cfg["num_codebooks"], cfg["codes_column"])
            self.speech_len = code_columns.lengths(index, cfg["codes_column"])
        usable = (self.speech_len > 0) & (index.text_token_len != 0)
        self.speakers = prompts.SpeakerRows(index.spk, index.group, usable=usable)

    @property
    def needs_speech_token(self) -> bool:
        return not self.num_extra and super().needs_speech_token

    def columns(self, available):
        return (
            *super().columns(available),
            *(text_columns.COLUMNS if self.feature_dim else ()),
            *((self.cfg["codes_column"],) if self.num_extra else ()),
        )

    def plan(self, rows, epoch, shard, skips, buckets):
        """Each target with same-speaker references drawn per (seed, epoch, shard), dropping references before
        the target when the example is longer than the row."""
        c, ix = self.cfg, self.index
        rnd = random.Random(int(order.epoch_rng(c["seed"], epoch, 2, shard).integers(2**63)))
        limit = buckets[0].length
        # a (text, speech) block costs text + speech + 2 positions (task_id, and sos or the previous eos)
        block = np.maximum(ix.text_token_len, 0).astype(np.int64) + self.speech_len + 2
        examples, lengths = [], []
        for r in rows.tolist():
            if self.speech_len[r] <= 0:
                skips["no multi-codebook codes" if self.num_extra else "empty speech tokens"] += 1
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
        lengths = np.asarray(lengths, np.int64)
        return batching.pack_plan(examples, lengths, buckets[0], drop_remainder=c["drop_remainder"])

    def steps(self):
        return [self.read_tokens, self.nonempty_text, *([self.read_codes] if self.num_extra else [])]

    def read_codes(self, s, rng=None):
        """Codebook 0 as the speech tokens, codebooks 1..K-1 as ``speech_extra`` [N, K-1]."""
        codes = code_columns.codes(s.get(self.cfg["codes_column"]))
        if codes is None or codes.shape[0] != self.num_extra + 1 or codes.shape[1] == 0:
            raise steps.SkipSample("no multi-codebook codes")
        if codes.min() < 0 or codes.max() >= self.cfg["speech_token_size"]:  # every codebook below codebook 0's eos
            raise steps.SkipSample("codes out of range")
        s["speech_token"], s["speech_extra"] = codes[0], codes[1:].T
        return s

    def read_tokens(self, s, rng=None):
        if not self.feature_dim:
            s = steps.tokenize(s, self.tokenizer())
        elif s.get(text_columns.TOKEN) is None:
            raise steps.SkipSample("no text features")  # skipped by the preparation stage
        else:
            s["text_token"] = np.asarray(s[text_columns.TOKEN], np.int32)
            s["text_features"] = text_columns.features(s["text_token"], s.get(text_columns.FEATURE), self.feature_dim)
            if s["text_features"] is None:
                raise steps.SkipSample("text features not text ids x text_feature_dim")
        return steps.check_tokens(s, need_speech_token=not self.num_extra)  # K > 1: read_codes gives them

    @staticmethod
    def nonempty_text(s, rng=None):
        if len(s["text_token"]) == 0:
            raise steps.SkipSample("too few text tokens")
        return s

    def load(self, reader, step, bucket, slots, skipped, row_offset=0):  # no random draws
        rows, utts = [], []
        for slot in slots:
            loaded = [(ex, base.guarded(skipped, lambda ex=ex: f"example {[self.index.utt[r] for r in ex]}",
                                        self._example, reader, ex, bucket, skipped)) for ex in slot]  # fmt: skip
            rows.append([seq for _, seq in loaded])
            utts.append([self.index.utt[ex[-1]] for ex, seq in loaded if seq is not None])  # segment order
        batch = packing.pack_rows(rows, bucket.length, self.feature_dim, self.num_extra)
        batch["valid"] = batch["num_segments"] > 0
        return batch, utts

    def _example(self, reader, ex, bucket, skipped):
        samples = [self.process(reader.read(r), None) for r in ex]
        features = [s["text_features"] for s in samples] if self.feature_dim else None
        extra = [s["speech_extra"] for s in samples] if self.num_extra else None
        out = packing.gpt_sovits2_example(
            [s["text_token"] for s in samples], [s["speech_token"] for s in samples],
            speech_token_size=self.cfg["speech_token_size"], text_features=features, speech_extra=extra,
        )  # fmt: skip
        if len(out["kinds"]) > bucket.length:  # text lengths changed since indexing
            skipped["longer than the pack length"] += 1
            return None
        return out

    def num_samples(self, batch):
        return int(batch["num_segments"].sum())

    def padding(self, batch):
        return int(batch["lengths"].sum()), int(batch["kinds"].size)


TASK = GptSovits2Task
