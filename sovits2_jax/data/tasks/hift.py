"""HiFT vocoder (GAN): fixed-length random audio crops with their mels and F0.

Batch: speech [B, truncate_length], speech_feat [B, T, 80] with speech_feat_len, pitch_feat [B, T]
(T = truncate_length / hop_size, the one bucket length); full batches only by default (``drop_remainder``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sovits2_jax.data import steps
from sovits2_jax.data.tasks import base


class HiftTask(base.Task):
    # one crop length: 51 mel frames of 480 samples = truncate_length; 2000 frames per batch as the flow's
    # (full batches only: no all-zero rows shown to the discriminator); truncate_length: samples per random crop
    defaults: ClassVar[dict] = dict(bucket_lengths=[51], max_frames_in_batch=2000, drop_remainder=True,
                                    truncate_length=24480)  # fmt: skip
    reads_speech_token = False
    reads_audio = True
    primary = "speech_feat"
    unsized_fields = ("pitch_feat",)

    @staticmethod
    def validate(cfg, check) -> None:
        check(len(cfg.bucket_lengths) == 1, "config.data.bucket_lengths: hift crops to one length, give one bucket")
        check(
            cfg.bucket_lengths[0] * cfg.mel.hop_size == cfg.truncate_length,
            f"config.data.bucket_lengths[0]={cfg.bucket_lengths[0]} must be truncate_length / mel.hop_size "
            f"= {cfg.truncate_length / cfg.mel.hop_size}",
        )

    def lengths(self, rows, skip):
        return np.full(len(rows), self.cfg["bucket_lengths"][0])

    def steps(self):
        c = self.cfg
        return [
            *self.audio_steps(),
            lambda s, rng: steps.truncate(s, length=c["truncate_length"], rng=rng),
            self.mel,
            lambda s, rng: steps.compute_f0(s, hop_size=c["mel"]["hop_size"]),
            *self.online_steps(),
        ]

    def family_fields(self, length):
        return [
            ("speech_feat", length, (self.cfg["mel"]["num_mels"],), np.float32),
            ("speech", self.cfg["truncate_length"], (), np.float32),
            ("pitch_feat", length, (), np.float32),
        ]


TASK = HiftTask
