"""Per-utterance processing steps mirroring CosyVoice's ``dataset/processor.py`` (numpy, host side).

Each step takes and returns a sample dict; a step that finds the sample unusable raises ``SkipSample`` with a
short reason, which the loader counts (the batch keeps a padding row in its place).
"""

from __future__ import annotations

import io

import numpy as np


class SkipSample(Exception):
    """The sample cannot be used; ``str(exc)`` is the reason (counted per reason)."""


def decode_audio(sample: dict) -> dict:
    """``audio_data`` bytes -> ``speech`` float32 mono (channel mean, as the reference) and ``sample_rate``."""
    import soundfile as sf

    data = sample.pop("audio_data", None)
    if not data:
        raise SkipSample("empty audio")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise SkipSample("unreadable audio") from exc
    if wav.shape[0] == 0:
        raise SkipSample("empty audio")
    sample["speech"] = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    sample["sample_rate"] = int(sr)
    return sample


def tokenize(sample: dict, tokenizer) -> dict:
    sample["text_token"] = np.asarray(tokenizer.encode(sample.get("text") or ""), np.int32)
    return sample


def check_tokens(sample: dict, *, need_speech_token: bool) -> dict:
    """Speech tokens present and non-empty (when the pipeline uses them)."""
    if need_speech_token:
        tok = sample.get("speech_token")
        if tok is None or len(tok) == 0:
            raise SkipSample("empty speech tokens")
        sample["speech_token"] = np.asarray(tok, np.int32)
    return sample


def filter_lengths(
    sample: dict,
    *,
    max_length: float,
    min_length: float,
    token_max_length: int,
    token_min_length: int,
    min_output_input_ratio: float,
    max_output_input_ratio: float,
) -> dict:
    """CosyVoice's ``filter``: audio length in 10 ms frames and text tokens within bounds and ratios."""
    if "speech" in sample:
        frames = len(sample["speech"]) / sample["sample_rate"] * 100
    else:  # no audio decoded (token-only pipelines): 25 Hz speech tokens give the duration
        frames = len(sample["speech_token"]) * 4.0
    if frames < min_length:
        raise SkipSample("too short")
    if frames > max_length:
        raise SkipSample("too long")
    n_text = len(sample["text_token"])
    if n_text < token_min_length:
        raise SkipSample("too few text tokens")
    if n_text > token_max_length:
        raise SkipSample("too many text tokens")
    if frames > 0:
        ratio = n_text / frames
        if ratio < min_output_input_ratio or ratio > max_output_input_ratio:
            raise SkipSample("text/audio ratio out of bounds")
    return sample


def resample(sample: dict, *, sample_rate: int, min_sample_rate: int) -> dict:
    """To ``sample_rate`` (rates below ``min_sample_rate`` are dropped); peak-normalised when it exceeds 1."""
    from sovits2_jax.audio.resample import resample as _resample

    sr = sample["sample_rate"]
    if sr != sample_rate:
        if sr < min_sample_rate:
            raise SkipSample("sample rate too low")
        sample["speech"] = _resample(sample["speech"], sr, sample_rate)
        sample["sample_rate"] = sample_rate
    peak = float(np.max(np.abs(sample["speech"])))
    if peak > 1.0:
        sample["speech"] = sample["speech"] / peak
    return sample


def truncate(sample: dict, *, length: int, rng: np.random.Generator) -> dict:
    """GAN pipeline: a random ``length``-sample crop, or right zero-padding when shorter."""
    wav = sample["speech"]
    if len(wav) > length:
        start = int(rng.integers(0, len(wav) - length + 1))
        wav = wav[start : start + length]
    else:
        wav = np.pad(wav, (0, length - len(wav)))
    sample["speech"] = wav.astype(np.float32)
    return sample


def compute_mel(sample: dict, *, mel_config, token_mel_ratio: int) -> dict:
    """Matcha log-mel ``speech_feat`` [frames, mels]; with ``token_mel_ratio`` both the mel and the speech
    tokens are cut to a whole number of tokens (the reference's ``compute_fbank``)."""
    from sovits2_jax.audio.mel import mel_spectrogram_np, num_frames

    wav = sample["speech"]
    if num_frames(len(wav), mel_config) < 1 or len(wav) <= (mel_config.n_fft - mel_config.hop_size) // 2:
        raise SkipSample("too short")
    feat = mel_spectrogram_np(wav, mel_config)
    if token_mel_ratio and "speech_token" in sample:
        n_tok = int(min(feat.shape[0] / token_mel_ratio, len(sample["speech_token"])))
        if n_tok < 1:
            raise SkipSample("too short")
        feat = feat[: token_mel_ratio * n_tok]
        sample["speech_token"] = sample["speech_token"][:n_tok]
    if not np.all(np.isfinite(feat)):
        raise SkipSample("non-finite mel")
    sample["speech_feat"] = feat
    return sample


def compute_f0(sample: dict, *, hop_size: int) -> dict:
    """GAN pipeline: pyworld F0 at one value per mel frame (``pitch_feat``)."""
    from sovits2_jax.audio.f0 import extract_f0

    sample["pitch_feat"] = extract_f0(
        sample["speech"], sample["sample_rate"], hop_size, num_frames=sample["speech_feat"].shape[0]
    )
    return sample


def whisper_feat(sample: dict, *, n_mels: int = 128) -> dict:
    """Online tokenization: whisper log-mel [frames, n_mels] of the audio at 16 kHz (100 frames/s)."""
    from sovits2_jax.audio.resample import resample as _resample
    from sovits2_jax.audio.whisper_mel import SAMPLE_RATE, log_mel_spectrogram

    wav16 = _resample(sample["speech"], sample["sample_rate"], SAMPLE_RATE)
    if len(wav16) < 400:
        raise SkipSample("too short")
    sample["whisper_feat"] = log_mel_spectrogram(wav16, n_mels).T.copy()
    return sample


def parse_embedding(sample: dict, *, normalize: bool, dim: int, use_spk_embedding: bool) -> dict:
    """float32 ``utt_embedding`` / ``spk_embedding`` (L2-normalised when asked) and ``embedding`` = the one the
    model conditions on. Missing, wrong-sized, non-finite or zero vectors skip the sample."""
    for key in ("utt_embedding", "spk_embedding"):
        v = sample.get(key)
        if v is None:
            raise SkipSample("missing embedding")
        v = np.asarray(v, np.float32).reshape(-1)
        if v.shape[0] != dim:
            raise SkipSample("embedding size mismatch")
        if not np.all(np.isfinite(v)):
            raise SkipSample("non-finite embedding")
        if normalize:
            norm = float(np.linalg.norm(v))
            if norm == 0.0:
                raise SkipSample("zero embedding")
            v = v / max(norm, 1e-12)
        sample[key] = v.astype(np.float32)
    sample["embedding"] = sample["spk_embedding" if use_spk_embedding else "utt_embedding"]
    return sample
