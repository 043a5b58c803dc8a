"""Minimal ctypes binding to the libespeak-ng shipped by the ``espeakng-loader`` package (no system install)."""

from __future__ import annotations

import ctypes

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_SSML = 0x10
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng refused a voice or failed to synthesise."""


class Espeak:
    """An espeak-ng engine synthesising int16 audio at ``sample_rate`` (22050 Hz).

    The library keeps global wave-generator state (e.g. the voice-flutter phase) that survives
    ``espeak_Terminate``, so the exact samples depend on everything the process synthesised before. For
    reproducible audio, synthesise a fixed sequence of utterances in a freshly started process.
    """

    def __init__(self, seed: int = 0) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({self.sample_rate})")
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))  # the wave generator also draws from libc's rand()
        self._chunks: list[np.ndarray] = []

        def collect(wav, num_samples, _events):
            if num_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

    def synthesize(
        self, text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, ssml: bool = False
    ) -> np.ndarray:
        """int16 waveform at ``self.sample_rate`` for ``text`` spoken by ``voice`` (e.g. "en-us+m3"); ``ssml``:
        ``text`` is SSML (``<voice name=...>`` switches voice and language inside the utterance)."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
            self._lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        options = _CHARS_UTF8 | (_SSML if ssml else 0)
        status = self._lib.espeak_Synth(data, len(data), 0, 1, 0, options, None, None)
        self._lib.espeak_Synchronize()
        if status != 0:
            raise EspeakError(f"espeak_Synth failed ({status}) for {text[:40]!r}")
        if not self._chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text[:40]!r}")
        return np.concatenate(self._chunks)
