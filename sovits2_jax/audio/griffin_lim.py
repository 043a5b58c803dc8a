"""A vocoder without training: Griffin-Lim phase reconstruction of a log-mel (librosa).

The quality ladder renders mels with it so that a flow's progress is audible while the trained vocoder lags, and
renders the ground truth's own mel as the bar a trained vocoder must clear.
"""

from __future__ import annotations

import numpy as np

from sovits2_jax.audio.mel import MelConfig

ITERATIONS = 32


def log_mel_to_audio(log_mel: np.ndarray, cfg: MelConfig = MelConfig(), iterations: int = ITERATIONS) -> np.ndarray:
    """float32 audio at ``cfg.sampling_rate`` from a natural-log magnitude mel [frames, num_mels] computed as
    ``mel_spectrogram_np`` computes it: non-negative least squares back to a linear magnitude, then Griffin-Lim."""
    import librosa

    log_mel = np.asarray(log_mel, np.float32)
    if log_mel.ndim != 2 or log_mel.shape[1] != cfg.num_mels or len(log_mel) == 0:
        raise ValueError(f"a log-mel [frames, {cfg.num_mels}] expected, got {log_mel.shape}")
    magnitude = librosa.feature.inverse.mel_to_stft(
        np.exp(log_mel).T, sr=cfg.sampling_rate, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin, fmax=cfg.fmax
    )
    wav = librosa.griffinlim(magnitude, n_iter=iterations, hop_length=cfg.hop_size, win_length=cfg.win_size,
                             n_fft=cfg.n_fft, random_state=0)  # fmt: skip
    return wav.astype(np.float32)
