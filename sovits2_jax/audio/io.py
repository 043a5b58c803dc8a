"""Reading and writing audio files."""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf

from sovits2_jax.audio.resample import resample


class AudioError(ValueError):
    """An audio file is unreadable, empty or otherwise unusable."""


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(num_frames, sample_rate) from the header; raises AudioError for a missing, corrupt or empty file."""
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for corrupt headers
        raise AudioError(f"{path}: unreadable audio ({exc.__class__.__name__})") from exc
    if info.frames <= 0:
        raise AudioError(f"{path}: audio has zero samples")
    return int(info.frames), int(info.samplerate)


def load_audio(source: str | os.PathLike | bytes, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 waveform in [-1, 1] (first channel, like torchaudio's ``[0]``) and its sample rate."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not os.path.exists(source):
        raise AudioError(f"{name}: no such file")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        wav, sr = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{name}: unreadable audio ({exc.__class__.__name__})") from exc
    if wav.shape[0] == 0:
        raise AudioError(f"{name}: audio has zero samples")
    wav = wav[:, 0]
    if target_sr is not None and sr != target_sr:
        wav, sr = resample(wav, sr, target_sr), target_sr
    return wav, int(sr)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, written to a temporary name and renamed."""
    tmp = f"{path}.tmp"
    sf.write(
        tmp,
        np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0),
        sample_rate,
        subtype="PCM_16",
        format="WAV",
    )
    os.replace(tmp, path)
