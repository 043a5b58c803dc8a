"""Offline ASR (pocketsphinx with the en-us model in its wheel) and word error rate (jiwer).

pocketsphinx's acoustic model was trained on natural speech; on espeak-ng's formant speech it mostly fails, so the
built-in corpus gets a high WER from it. The number is reported as measured.
"""

from __future__ import annotations

import re

import numpy as np

from sovits2_jax.audio.resample import resample

SAMPLE_RATE = 16000


def normalize_text(text: str) -> str:
    """Lower case, letters, digits and apostrophes only, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


class Recognizer:
    """A pocketsphinx decoder with its default (bundled en-us) acoustic model, dictionary and language model."""

    def __init__(self) -> None:
        self._decoder = None

    def __call__(self, wav: np.ndarray, sample_rate: int) -> str:
        """The recognised words of one utterance (lower case; empty when nothing was recognised)."""
        from pocketsphinx import Decoder

        if self._decoder is None:
            self._decoder = Decoder(loglevel="FATAL", cmn="batch")  # batch CMN: no state carried between utts
        wav16 = resample(np.asarray(wav, np.float32), sample_rate, SAMPLE_RATE)
        pcm = (np.clip(wav16, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return normalize_text(hyp.hypstr) if hyp is not None else ""


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of ``hypothesis`` against ``reference`` after ``normalize_text`` on both."""
    import jiwer

    ref = normalize_text(reference)
    if not ref:
        raise ValueError("the reference text has no words")
    return float(jiwer.wer(ref, normalize_text(hypothesis)))
