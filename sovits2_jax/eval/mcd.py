"""Mel-cepstral distance with DTW (the ``mel-cepstral-distance`` package at its defaults)."""

from __future__ import annotations

import logging


class _FftSizeNotice(logging.Filter):
    """Drops the package's per-file notice that its default 32 ms window is not a power-of-two number of samples
    (at 22.05 / 24 kHz): a speed hint about the defaults every score here is computed with, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be a power of 2" not in record.getMessage()


def mcd_dtw(synthesis_path: str, reference_path: str) -> float:
    """MCD (dB) between two wav files, DTW-aligned on the mel level; both are read at the lower of their rates."""
    from mel_cepstral_distance import compare_audio_files

    logger = logging.getLogger("mel_cepstral_distance.api")
    if not any(isinstance(f, _FftSizeNotice) for f in logger.filters):
        logger.addFilter(_FftSizeNotice())
    mcd, _penalty = compare_audio_files(reference_path, synthesis_path)
    return float(mcd)
