"""Mel-cepstral distance with DTW (the ``mel-cepstral-distance`` package at its defaults)."""

from __future__ import annotations


def mcd_dtw(synthesis_path: str, reference_path: str) -> float:
    """MCD (dB) between two wav files, DTW-aligned on the mel level; both are read at the lower of their rates."""
    from mel_cepstral_distance import compare_audio_files

    mcd, _penalty = compare_audio_files(reference_path, synthesis_path)
    return float(mcd)
