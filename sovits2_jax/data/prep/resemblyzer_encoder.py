"""Resemblyzer's shipped speaker encoder (GE2E LSTM, 256-d) as an offline ONNX speaker model.

The ONNX file (``export_resemblyzer``, needs the ``resemblyzer`` package and torch once) takes partial-utterance
mel frames ``mels`` [P, 160, 40] and returns L2-normalised ``embeddings`` [P, 256]; its metadata
``sovits2_jax.frontend = resemblyzer`` tells the extractor to compute those inputs (below) instead of campplus's
fbank and to average the partials, as ``VoiceEncoder.embed_utterance`` does. Resemblyzer's VAD-based trimming of
long silences is not applied. Embeddings are 256-d (campplus gives 192): set the model's speaker-embedding size.
"""

from __future__ import annotations

import os

import numpy as np

from sovits2_jax.audio.whisper_mel import slaney_mel_filters

FRONTEND = "resemblyzer"
SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40
PARTIAL_FRAMES = 160
PARTIAL_RATE = 1.3  # partial utterances per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to -30 dBFS RMS."""
    rms = np.sqrt(np.mean(np.square(wav * 32767.0, dtype=np.float64)))
    if rms == 0:
        return wav
    change_db = TARGET_DBFS - 20 * np.log10(rms / 32767.0)
    return wav if change_db < 0 else (wav * 10 ** (change_db / 20)).astype(np.float32)


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """librosa.feature.melspectrogram(n_fft 400, hop 160, 40 mels, power 2, centred, zero-padded).T [T, 40]."""
    padded = np.pad(np.asarray(wav, np.float64), N_FFT // 2)
    n = 1 + (len(padded) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    spectrum = np.fft.rfft(padded[idx] * window, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return (power @ slaney_mel_filters(SAMPLE_RATE, N_FFT, N_MELS).T.astype(np.float64)).astype(np.float32)


def partial_mels(wav16k: np.ndarray) -> np.ndarray:
    """[P, 160, 40] partial-utterance mels (1.6 s windows at 1.3 per second), as embed_utterance slices them."""
    wav = normalize_volume(np.asarray(wav16k, np.float32))
    n_frames = int(np.ceil((len(wav) + 1) / HOP))
    step = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (len(wav) - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    needed = (starts[-1] + PARTIAL_FRAMES) * HOP
    if needed >= len(wav):
        wav = np.pad(wav, (0, needed - len(wav)))
    mel = mel_frames(wav)
    return np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])


def embed(session, wav16k: np.ndarray) -> np.ndarray:
    """256-d utterance embedding: mean of the partial embeddings, L2-normalised."""
    partials = session.run(None, {session.get_inputs()[0].name: partial_mels(wav16k)})[0]
    mean = partials.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def export_resemblyzer(path: str) -> str:
    """Export resemblyzer's pretrained VoiceEncoder to ONNX (needs resemblyzer + torch; no download)."""
    import onnx
    import torch
    from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder(device="cpu", verbose=False).eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with torch.no_grad():
        torch.onnx.export(
            encoder, (torch.rand(2, PARTIAL_FRAMES, N_MELS),), tmp, input_names=["mels"], output_names=["embeddings"],
            dynamic_axes={"mels": {0: "partials"}, "embeddings": {0: "partials"}}, opset_version=17, dynamo=False,
        )  # fmt: skip
    model = onnx.load(tmp)
    entry = model.metadata_props.add()
    entry.key, entry.value = "sovits2_jax.frontend", FRONTEND
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path


def is_resemblyzer(session) -> bool:
    return session.get_modelmeta().custom_metadata_map.get("sovits2_jax.frontend") == FRONTEND
