"""Flow-matching mel decoder: Matcha mels bucketed by 50 Hz frames, speech tokens cut to whole tokens.

Batch: speech_feat [B, L, 80], speech_token [B, L / token_mel_ratio], embedding [B, D] (utt or spk, L2-normed),
each padded field with its ``X_len``; cond_len [B] (prompt-prefix frames drawn like the reference) with
``flow_prompt``; whisper_feat [B, 2L + 4, 128] (and no speech_token) with ``online_tokenization``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sovits2_jax.data import prompts
from sovits2_jax.data.tasks import base


class FlowTask(base.Task):
    # 50 Hz mel frames, CosyVoice2's max_frames_in_batch 2000; up to 40 s
    defaults: ClassVar[dict] = dict(
        bucket_lengths=[100, 128, 160, 200, 256, 320, 400, 500, 640, 800, 1000, 1280, 1600, 2000],
        max_frames_in_batch=2000,
        flow_prompt=True,  # host-drawn condition prefix lengths (cond_len) as the reference draws them
    )
    reads_audio = True
    reads_embedding = True
    fits_buckets = True
    primary = "speech_feat"

    @staticmethod
    def validate(cfg, check) -> None:
        if cfg.token_mel_ratio:
            bad = [x for x in cfg.bucket_lengths if x % cfg.token_mel_ratio]
            check(
                not bad, f"config.data.bucket_lengths {bad} must be multiples of token_mel_ratio={cfg.token_mel_ratio}"
            )

    @classmethod
    def measures_audio(cls, cfg) -> bool:
        return bool(cfg.online_tokenization)

    def lengths(self, rows, skip):
        """Mel frames: from the measured audio without tokens, else tokens x token_mel_ratio."""
        ix, c = self.index, self.cfg
        tok = ix.speech_token_len[rows]
        if c["online_tokenization"] or tok.min(initial=1) < 0:
            secs = ix.audio_seconds[rows]
            lengths = np.ceil(secs * c["sample_rate"] / c["mel"]["hop_size"]).astype(np.int64) + 1
            return np.where(secs < 0, 1, lengths)
        return tok.astype(np.int64) * max(c["token_mel_ratio"], 1)

    def bucket_multiple(self) -> int:
        return max(self.cfg["token_mel_ratio"], 1)

    def steps(self):
        c = self.cfg
        return [
            *self.audio_steps(),
            lambda s, rng: self.mel(s, rng, token_mel_ratio=c["token_mel_ratio"]),
            *self.online_steps(),
            self.embedding,
            *([self.prompt_len] if c["flow_prompt"] else []),
        ]

    @staticmethod
    def prompt_len(s: dict, rng) -> dict:
        s["cond_len"] = prompts.flow_prompt_len(rng, s["speech_feat"].shape[0])
        return s

    def family_fields(self, length):
        out = [("speech_feat", length, (self.cfg["mel"]["num_mels"],), np.float32)]
        if not self.cfg["online_tokenization"]:
            out.append(("speech_token", length // max(self.cfg["token_mel_ratio"], 1), (), np.int32))
        return out

    def assemble(self, samples, bucket):
        out = super().assemble(samples, bucket)
        if self.cfg["flow_prompt"]:
            out["cond_len"] = np.asarray([0 if s is None else s["cond_len"] for s in samples], np.int32)
        return out


TASK = FlowTask
