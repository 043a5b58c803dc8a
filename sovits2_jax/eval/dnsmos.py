"""DNSMOS P.835 (SIG / BAK / OVRL) from the ONNX models shipped in the ``speechmos`` wheel."""

from __future__ import annotations

import numpy as np

from sovits2_jax.audio.resample import resample

SAMPLE_RATE = 16000


def dnsmos_scores(wav: np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"sig", "bak", "ovrl"} mean opinion scores (1..5) of one utterance."""
    from speechmos import dnsmos as speechmos_dnsmos

    wav16 = np.clip(resample(np.asarray(wav, np.float32), sample_rate, SAMPLE_RATE), -1.0, 1.0)
    scores = speechmos_dnsmos.run(wav16, SAMPLE_RATE)
    return {"sig": float(scores["sig_mos"]), "bak": float(scores["bak_mos"]), "ovrl": float(scores["ovrl_mos"])}
