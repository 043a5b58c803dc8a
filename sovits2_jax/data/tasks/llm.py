"""CosyVoice2 ``Qwen2LM``: text and speech tokens bucketed by speech-token length.

Batch: text_token [B, Lt] (Lt = max(text_min_pad, ceil(text_ratio * L))), speech_token [B, L], embedding [B, D]
(utt or spk, L2-normed), each padded field with its ``X_len``; with ``dpo`` also reject_speech_token [B, L] (the
Parquet's ``reject_speech_token`` column); whisper_feat [B, 2L + 4, 128] with ``online_tokenization``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from sovits2_jax.data import steps
from sovits2_jax.data.tasks import base


class LlmTask(base.Task):
    # 25 Hz speech tokens: CosyVoice2's 2000 mel frames (50 Hz) per batch are 1000 tokens; up to 40 s
    defaults: ClassVar[dict] = dict(
        bucket_lengths=[25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 250, 320, 400, 500, 640, 800, 1000],
        max_frames_in_batch=1000,
        text_ratio=0.5,  # text tokens padded to max(text_min_pad, ceil(text_ratio * speech bucket length))
        text_min_pad=16,
        dpo=False,  # also batch the rejected speech tokens (column reject_speech_token) for DPO
    )
    reads_embedding = True
    fits_buckets = True

    @staticmethod
    def validate(cfg, check) -> None:
        check(cfg.text_ratio > 0, f"config.data.text_ratio={cfg.text_ratio} must be positive")

    def columns(self, available):
        return super().columns(available) + (("reject_speech_token",) if self.cfg["dpo"] else ())

    def lengths(self, rows, skip):
        """Speech tokens, widened so the text fits its padded share."""
        ix, c = self.index, self.cfg
        text = np.maximum(ix.text_token_len[rows], 0)
        lengths = np.maximum(ix.speech_token_len[rows], np.ceil(text / c["text_ratio"]).astype(np.int64))
        if c["dpo"]:
            reject = ix.reject_token_len[rows]
            skip["empty rejected speech tokens"] = reject <= 0
            lengths = np.maximum(lengths, reject)
        return lengths

    def steps(self):
        online = self.cfg["online_tokenization"]
        return [
            self.read_tokens,
            *([self.rejected_tokens] if self.cfg["dpo"] else []),
            *([self.decode] if online else []),
            self.filter,
            *([self.resample] if online else []),
            *self.online_steps(),
            self.embedding,
        ]

    @staticmethod
    def rejected_tokens(s: dict, rng=None) -> dict:
        rej = s.get("reject_speech_token")
        if rej is None or len(rej) == 0:
            raise steps.SkipSample("empty rejected speech tokens")
        s["reject_speech_token"] = np.asarray(rej, np.int32)
        return s

    def family_fields(self, length):
        c = self.cfg
        out = [
            ("text_token", max(c["text_min_pad"], math.ceil(length * c["text_ratio"])), (), np.int32),
            ("speech_token", length, (), np.int32),
        ]
        if c["dpo"]:
            out.append(("reject_speech_token", length, (), np.int32))
        return out


TASK = LlmTask
