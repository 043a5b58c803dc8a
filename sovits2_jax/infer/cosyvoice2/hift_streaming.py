"""Streaming HiFT with CosyVoice2's caches (``CosyVoice2Model.token2wav``): mel chunks in, audio chunks out.

Each chunk is vocoded together with the last ``MEL_CACHE`` (8) mel frames of the previous one; the first
``SOURCE_CACHE`` (8 * 480 = 3840) excitation samples are replaced by the previous call's last ones (so the harmonic
phase continues), and the first 3840 output samples are cross-faded with the previous call's held-back tail using
``np.hamming(7680)``. A non-final chunk keeps its last 3840 samples back for that fade; ``finalize`` emits all.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

MEL_CACHE = 8


def source_cache_len(upsample_scale: int = 480) -> int:
    return MEL_CACHE * upsample_scale


def fade_in_out(speech: np.ndarray, previous: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The first half-window of ``speech`` faded in over the last half-window of ``previous`` (float64 math,
    float32 result, as the reference multiplies float32 tensors by the float64 numpy window)."""
    n = window.shape[0] // 2
    out = np.array(speech, np.float32, copy=True)
    out[:n] = (speech[:n].astype(np.float64) * window[:n] + previous[-n:].astype(np.float64) * window[n:]).astype(
        np.float32
    )
    return out


@functools.partial(jax.jit, static_argnums=0)
def _vocode(graphdef, params, mel, rng, cache_source, source):
    model = nnx.merge(graphdef, params)
    if source is None:
        source = model.make_source(model.predict_f0(mel[None]), rng)[0]
    if cache_source is not None:
        source = source.at[: cache_source.shape[0]].set(cache_source)
    return model.decode(mel[None], source[None])[0], source


class HiftStreamer:
    """One stream's HiFT state. ``key`` None = no random phase/noise (deterministic; what parity uses); otherwise
    chunk i draws its excitation randomness from ``fold_in(key, i)``."""

    def __init__(self, graphdef, params, key: jax.Array | None = None):
        self.graphdef, self.params, self.key = graphdef, params, key
        scale = nnx.merge(graphdef, params).config.upsample_scale
        self.source_len = source_cache_len(scale)
        self.window = np.hamming(2 * self.source_len)
        self.cache: dict | None = None
        self.calls = 0

    def push(self, mel: np.ndarray, *, finalize: bool = False, source: np.ndarray | None = None) -> np.ndarray:
        """Vocodes mel [T, 80] (the frames after the previous chunk); returns the audio that is final now.
        ``source``: an excitation for the whole vocoded span (cache frames included) to use instead of the one
        predicted from the mel (its cached head is still replaced), e.g. to replay another implementation's."""
        mel = np.asarray(mel, np.float32)
        cache_source = None
        if self.cache is not None:
            mel = np.concatenate([self.cache["mel"], mel])
            cache_source = self.cache["source"]
        rng = None if self.key is None else jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        wav, source = _vocode(self.graphdef, self.params, mel, rng, cache_source, source)
        wav, source = np.asarray(wav), np.asarray(source)
        if self.cache is not None:
            wav = fade_in_out(wav, self.cache["speech"], self.window)
        if finalize:
            self.cache = None
            return wav
        self.cache = {"mel": mel[-MEL_CACHE:], "source": source[-self.source_len :], "speech": wav[-self.source_len :]}
        return wav[: -self.source_len]
