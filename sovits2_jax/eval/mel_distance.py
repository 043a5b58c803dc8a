"""Frame-by-frame distances between two log-mel spectrograms of the same utterance (no time warping).

The mel-cepstral distance here is computed from the natural-log magnitude mel itself (80 bins, coefficients
1..24), so its scale is close to, not equal to, the evaluator's MCD-DTW (the mel-cepstral-distance package works
from its own power mel): compare it with itself across runs, and with the calibration rows.

Used where the two mels share their time axis by construction: the flow's mel from an utterance's own speech
tokens against that utterance's mel. A flow that places frames late or early scores worse here than under
MCD-DTW, which would forgive it.
"""

from __future__ import annotations

import numpy as np

CEPSTRA = 24  # coefficients 1..24 (c0, the frame energy, is left out, as MCD usually does)
_DB = 10.0 / np.log(10.0) * np.sqrt(2.0)


def _dct_matrix(n: int, k: int) -> np.ndarray:
    """Rows 1..k of the DCT-II of length ``n`` scaled by 2 / n ([k, n]): the cepstral coefficients whose cosine
    series rebuilds the log-mel (the convention of the MCD formula's sqrt(2 * sum) over one side)."""
    i = np.arange(n)[None, :]
    m = np.arange(1, k + 1)[:, None]
    return np.cos(np.pi / n * (i + 0.5) * m) * (2.0 / n)


def mel_cepstra(log_mel: np.ndarray, count: int = CEPSTRA) -> np.ndarray:
    """Cepstral coefficients 1..count [T, count] of a natural-log mel [T, M]."""
    log_mel = np.asarray(log_mel, np.float64)
    return log_mel @ _dct_matrix(log_mel.shape[1], count).T


def frame_distances(ours: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean mel-cepstral distance (dB) and mean absolute log-mel difference over the common frames of two
    log-mels [T, M]; ``frames`` is how many were compared, ``length_ratio`` ours / truth."""
    ours, truth = np.asarray(ours), np.asarray(truth)
    if ours.ndim != 2 or truth.ndim != 2 or ours.shape[1] != truth.shape[1]:
        raise ValueError(f"log-mels [T, M] with one M expected, got {ours.shape} and {truth.shape}")
    n = min(len(ours), len(truth))
    if n == 0:
        raise ValueError("an empty mel has no frames to compare")
    a, b = ours[:n], truth[:n]
    diff = mel_cepstra(a) - mel_cepstra(b)
    mcd = float(np.mean(_DB * np.sqrt(np.sum(diff**2, axis=1))))
    return dict(mcd=mcd, l1=float(np.mean(np.abs(a - b))), frames=n, length_ratio=len(ours) / len(truth))
