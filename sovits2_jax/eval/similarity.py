"""Speaker similarity: cosine of resemblyzer's (shipped, pretrained) GE2E speaker embeddings."""

from __future__ import annotations

import numpy as np

from sovits2_jax.audio.resample import resample

SAMPLE_RATE = 16000


class SpeakerSimilarity:
    """Lazily loads resemblyzer's ``VoiceEncoder`` on the CPU (its weights ship with the package)."""

    def __init__(self) -> None:
        self._encoder = None

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """L2-normalised 256-d embedding, after resemblyzer's own preprocessing (level, VAD trimming)."""
        from resemblyzer import VoiceEncoder, preprocess_wav

        if self._encoder is None:
            self._encoder = VoiceEncoder(device="cpu", verbose=False)
        wav16 = resample(np.asarray(wav, np.float32), sample_rate, SAMPLE_RATE)
        trimmed = preprocess_wav(wav16)
        if len(trimmed) < SAMPLE_RATE // 10:  # the VAD found (almost) no speech: embed the whole signal
            trimmed = wav16
        return self._encoder.embed_utterance(trimmed)

    def __call__(self, wav_a: np.ndarray, sr_a: int, wav_b: np.ndarray, sr_b: int) -> float:
        """Cosine similarity of the two utterances' speaker embeddings."""
        return float(np.dot(self.embed(wav_a, sr_a), self.embed(wav_b, sr_b)))
