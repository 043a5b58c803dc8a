"""VITS decoder (GPT-SoVITS2's VITS2, GPT-SoVITS v1/v2): frame-aligned random crops with their linear spectrogram,
speech tokens (or SSL features), text ids and a same-speaker reference spectrogram.

Audio is resampled to ``sample_rate`` (32 kHz for the released sizes). A crop is a whole number of 25 Hz units
(``unit_frames`` spectrogram frames of ``spectrogram.hop_size`` samples), at most ``bucket_lengths[0]`` frames, so
``spec`` has exactly ``len(wav) / hop`` frames and ``codes`` exactly ``frames / unit_frames`` tokens. The reference
is another utterance of the target's speaker (never the target), drawn per (seed, step, slot), its spectrogram
randomly cropped to ``ref_frames``; ``reference="self"`` omits it (GPT-SoVITS's own training: ref = spec).

Batch: codes [B, F/u] (or ssl [B, F, ssl_dim] with ``ssl_column`` set: the SSL content kinds, ``hubert_vq`` and
``ssl_grvq``), spec [B, F, n_fft/2+1], wav [B, F*hop], text [B, text_length] ids (with ``text_source="bge_m3"``
the text encoder's per-token features [B, text_length, text_feature_dim] float32, from the columns
``data/prep/text_features.py`` adds), refer [B, ref_frames, n_fft/2+1], each with ``X_len``; valid [B].

SSL features are a flat list of a row's [frames at 50 Hz, ssl_dim] values (float16 or float32, as
``data.prep.ssl_features`` or GPT-SoVITS's own extraction wrote them); a row whose list is null (audio the SSL stage
could not read) is skipped. When the Parquet also has ``<ssl_column>_dim``, every row's value must equal ``ssl_dim``.
"""

from __future__ import annotations

import random
from typing import ClassVar

import numpy as np

from sovits2_jax.data import prompts, steps, text_columns
from sovits2_jax.data.tasks import base

REFERENCES = ("speaker", "self")
TEXT_SOURCES = ("bpe", "bge_m3")


def linear_spectrogram_np(wav: np.ndarray, *, n_fft: int, hop_size: int, win_size: int) -> np.ndarray:
    """GPT-SoVITS's ``spectrogram_torch`` in numpy for one waveform [N] -> [frames, n_fft // 2 + 1] float32
    (the host-side twin of ``audio.spectrogram.linear_spectrogram``)."""
    from sovits2_jax.audio.spectrogram import MAGNITUDE_EPS, hann_window, num_frames

    pad = (n_fft - hop_size) // 2
    x = np.pad(np.asarray(wav, np.float32), (pad, pad), mode="reflect")
    frames = num_frames(len(wav), n_fft, hop_size)
    window = np.zeros(n_fft, np.float32)
    left = (n_fft - win_size) // 2
    window[left : left + win_size] = hann_window(win_size)
    framed = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_size][:frames]
    spec = np.fft.rfft(framed * window, axis=-1)
    return np.sqrt(spec.real**2 + spec.imag**2 + MAGNITUDE_EPS).astype(np.float32)


def check_ssl_dim(index, column: str, ssl_dim: int) -> None:
    """A ValueError naming the file when the Parquet lacks ``column`` or its ``<column>_dim`` (when present) is not
    ``ssl_dim``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if column not in index.columns:
        raise ValueError(
            f"config.data.ssl_column={column!r} is not a column of the Parquet (python -m "
            "sovits2_jax.data.prep.ssl_features adds SSL features)"
        )
    dim_column = f"{column}_dim"
    if dim_column not in index.columns:
        return
    for path in index.files:
        dims = pc.unique(pq.read_table(path, columns=[dim_column]).column(dim_column).drop_null()).to_pylist()
        bad = [d for d in dims if d != ssl_dim]
        if bad:
            raise ValueError(f"{path}: {dim_column} is {bad[0]}, config.data.ssl_dim={ssl_dim}")


class VitsTask(base.Task):
    defaults: ClassVar[dict] = dict(
        bucket_lengths=[200],  # crop length in spectrogram frames (4 s at 50 frames/s)
        max_frames_in_batch=1600,
        drop_remainder=True,
        sample_rate=32000,
        spectrogram=dict(n_fft=2048, hop_size=640, win_size=2048),
        unit_frames=2,  # spectrogram frames per speech token (25 Hz tokens, 50 Hz frames)
        text_length=128,  # padded text ids; longer texts are skipped
        reference="speaker",  # "speaker": another utterance of the speaker; "self": none (ref = spec)
        ref_frames=300,
        min_prompts=1,  # same-speaker references drawn per target (reference="speaker")
        max_prompts=3,
        ssl_column="",  # SSL content kinds: the flat float list of [frames at 50 Hz, ssl_dim]; "": speech tokens
        ssl_dim=768,
        text_ids_column="",  # an int-list column of text ids (e.g. GPT-SoVITS phonemes) instead of BPE of `text`
        text_vocab_size=0,  # > 0: rows with a text id at or above it are skipped (the model's symbols)
        text_source="bpe",  # "bge_m3": `text` is the text encoder's per-token features (data/text_columns.py)
        text_encoder="",  # bge_m3: the directory the columns were made with (the family reads the width from it)
        text_feature_dim=0,  # bge_m3: the features' width
    )
    reads_audio = True
    primary = "spec"

    @staticmethod
    def validate(cfg, check) -> None:
        check(len(cfg.bucket_lengths) == 1, "config.data.bucket_lengths: vits crops to one length, give one bucket")
        check(
            cfg.bucket_lengths[0] % cfg.unit_frames == 0,
            f"config.data.bucket_lengths[0]={cfg.bucket_lengths[0]} must be a multiple of "
            f"unit_frames={cfg.unit_frames}",
        )
        check(cfg.reference in REFERENCES, f"config.data.reference={cfg.reference!r} not in {REFERENCES}")
        s = cfg.spectrogram
        check(s.win_size <= s.n_fft, f"config.data.spectrogram.win_size={s.win_size} exceeds n_fft={s.n_fft}")
        check(cfg.text_length >= 1 and cfg.ref_frames >= 1, "config.data.text_length and ref_frames must be >= 1")
        check(cfg.text_source in TEXT_SOURCES, f"config.data.text_source={cfg.text_source!r} not in {TEXT_SOURCES}")
        if cfg.text_source == "bge_m3":
            check(cfg.text_feature_dim >= 1 and not cfg.text_ids_column,
                  f"config.data.text_source='bge_m3' reads the text encoder's columns: config.data.text_feature_dim="
                  f"{cfg.text_feature_dim} must be its width and text_ids_column empty")  # fmt: skip

    @classmethod
    def text_length_column(cls, cfg) -> str | None:
        return text_columns.TOKEN if cfg["text_source"] == "bge_m3" else None

    def __init__(self, cfg, index):
        super().__init__(cfg, index)
        self.uses_ssl = bool(cfg["ssl_column"])
        self.feature_dim = cfg["text_feature_dim"] if cfg["text_source"] == "bge_m3" else 0
        if self.feature_dim:
            text_columns.check_files(index.files, self.feature_dim)
        if self.uses_ssl:
            check_ssl_dim(index, cfg["ssl_column"], cfg["ssl_dim"])
        usable = index.speech_token_len > 0 if self.needs_speech_token else None
        self.speakers = prompts.SpeakerRows(index.spk, index.group, usable=usable)

    @property
    def needs_speech_token(self) -> bool:
        return not self.uses_ssl and super().needs_speech_token

    def columns(self, available):
        extra = [c for c in (self.cfg["ssl_column"] if self.uses_ssl else "", self.cfg["text_ids_column"]) if c]
        extra += list(text_columns.COLUMNS) if self.feature_dim else []
        return (*super().columns(available), *extra)

    # ------------------------------------------------------------------------------------------------ plans

    def lengths(self, rows, skip):
        if self.cfg["reference"] == "speaker":
            p = self.speakers.pos[rows]
            others = self.speakers.spk_end[p] - self.speakers.spk_start[p] - 1
            usable = self.speakers.spk[rows] == self.index.spk[rows]  # unusable rows sit in a speaker of their own
            skip["no same-speaker reference"] = (others < 1) | ~usable
        return np.full(len(rows), self.cfg["bucket_lengths"][0])

    # ------------------------------------------------------------------------------------------------ loading

    def steps(self):
        return [*self.audio_steps(), self.crop]

    def read_tokens(self, s, rng=None):
        """Text ids (BPE of ``text``, the ``text_ids_column``, or the text encoder's with their features) within
        ``text_length``; speech tokens present."""
        col = self.cfg["text_ids_column"]
        if self.feature_dim:
            if s.get(text_columns.TOKEN) is None:
                raise steps.SkipSample("no text features")  # skipped by the preparation stage
            s["text_token"] = np.asarray(s[text_columns.TOKEN], np.int32)
            s["text_features"] = text_columns.features(s["text_token"], s.get(text_columns.FEATURE), self.feature_dim)
            if s["text_features"] is None:
                raise steps.SkipSample("text features not text ids x text_feature_dim")
        elif not col:
            s = steps.tokenize(s, self.tokenizer())
        elif s.get(col) is None:
            raise steps.SkipSample("missing text ids")
        else:
            s["text_token"] = np.asarray(s[col], np.int32)
        c = self.cfg
        if len(s["text_token"]) > c["text_length"]:
            raise steps.SkipSample("too many text tokens")
        if not self.feature_dim and c["text_vocab_size"] > 0 and np.any(s["text_token"] >= c["text_vocab_size"]):
            raise steps.SkipSample("text id beyond the model's symbols")
        s = steps.check_tokens(s, need_speech_token=self.needs_speech_token)
        if self.needs_speech_token and np.any(s["speech_token"] >= c["speech_token_size"]):
            raise steps.SkipSample("speech token beyond speech_token_size")
        return s

    def spectrogram(self, wav: np.ndarray) -> np.ndarray:
        return linear_spectrogram_np(wav, **self.cfg["spectrogram"].to_dict())

    def crop(self, s, rng):
        """A random crop of whole units (tokens) of the audio, its tokens / SSL frames and spectrogram."""
        c = self.cfg
        hop, u = c["spectrogram"]["hop_size"], c["unit_frames"]
        wav = s["speech"]
        if self.uses_ssl:
            if s.get(c["ssl_column"]) is None:
                raise steps.SkipSample("no ssl features")
            ssl = np.asarray(s[c["ssl_column"]], np.float32)
            if ssl.size == 0 or ssl.size % c["ssl_dim"]:
                raise steps.SkipSample("ssl features not a multiple of ssl_dim")
            ssl = ssl.reshape(-1, c["ssl_dim"])
            units = min(len(ssl) // u, len(wav) // (u * hop))
        else:
            units = min(len(s["speech_token"]), len(wav) // (u * hop))
        if units < 1:
            raise steps.SkipSample("too short")
        crop_units = c["bucket_lengths"][0] // u
        start = int(rng.integers(0, units - crop_units + 1)) if units > crop_units else 0
        n = min(units, crop_units)
        s["wav"] = wav[start * u * hop : (start + n) * u * hop].astype(np.float32)
        if self.uses_ssl:
            s["ssl"] = ssl[start * u : (start + n) * u]
        else:
            s["codes"] = s["speech_token"][start : start + n]
        s["spec"] = self.spectrogram(s["wav"])
        s["text"] = s["text_features"].astype(np.float32) if self.feature_dim else s["text_token"]
        return s

    def reference(self, reader, target: int, rng: np.random.Generator) -> np.ndarray:
        """The spectrogram of another same-speaker utterance, randomly cropped to ``ref_frames``."""
        c = self.cfg
        (row,) = self.speakers.draw(random.Random(int(rng.integers(2**63))), target, min_prompts=1, max_prompts=1)
        s = self.resample(self.decode(reader.read(row)))
        spec = self.spectrogram(s["speech"])
        if len(spec) > c["ref_frames"]:
            start = int(rng.integers(0, len(spec) - c["ref_frames"] + 1))
            spec = spec[start : start + c["ref_frames"]]
        return spec

    def _load_one(self, reader, row, rng, bucket):
        sample = self.process(reader.read(row), rng)
        if self.cfg["reference"] == "speaker":
            sample["refer"] = self.reference(reader, row, rng)
        self.check_fits(sample, bucket)
        return sample

    def family_fields(self, length):
        c = self.cfg
        bins = c["spectrogram"]["n_fft"] // 2 + 1
        out = [
            ("spec", length, (bins,), np.float32),
            ("wav", length * c["spectrogram"]["hop_size"], (), np.float32),
            ("text", c["text_length"], (self.feature_dim,), np.float32) if self.feature_dim
            else ("text", c["text_length"], (), np.int32),
        ]  # fmt: skip
        if self.uses_ssl:
            out.append(("ssl", length, (c["ssl_dim"],), np.float32))
        else:
            out.append(("codes", length // c["unit_frames"], (), np.int32))
        if c["reference"] == "speaker":
            out.append(("refer", c["ref_frames"], (bins,), np.float32))
        return out


TASK = VitsTask
