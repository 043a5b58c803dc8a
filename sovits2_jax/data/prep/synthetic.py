"""Small synthetic Parquet corpora in CosyVoice's schema (tests, benchmarks, pipeline tuning without data).

Audio is real encoded WAV: harmonic tones with a vibrato and a little noise, per-speaker pitch. ``layout="ours"``
writes with pyarrow in ``parquet_writer.SCHEMA``; ``layout="cosyvoice"`` writes like CosyVoice's
``tools/make_parquet_list.py`` (a pandas DataFrame, ``to_parquet``, float32 embeddings, int32 tokens).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

WORDS = tuple(
    [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "bright",
        "stars",
        "watch",
        "quietly",
        "far",
        "away",
    ]
)


def tone(rng: np.random.Generator, seconds: float, sample_rate: int, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / sample_rate
    wav = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * 0.2 + 0.01 * rng.standard_normal(len(t))
    return wav.astype(np.float32)


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def make_rows(
    num_rows: int, *, num_speakers: int = 4, sample_rate: int = 24000, min_seconds: float = 1.0,
    max_seconds: float = 4.0, embedding_dim: int = 192, seed: int = 0,
) -> list[dict]:  # fmt: skip
    """Utterances ``spkS_uN``; speech tokens at 25 Hz of the audio length; text a few words per second."""
    rng = np.random.default_rng(seed)
    spk_emb = {s: rng.standard_normal(embedding_dim) for s in range(num_speakers)}
    rows = []
    for n in range(num_rows):
        s = n % num_speakers
        secs = float(rng.uniform(min_seconds, max_seconds))
        wav = tone(rng, secs, sample_rate, 100.0 + 25.0 * s)
        words = rng.choice(WORDS, size=max(1, int(secs * 2.5)))
        rows.append(
            dict(
                utt=f"spk{s}_u{n:05d}", wav=f"/synthetic/spk{s}_u{n:05d}.wav", audio_data=wav_bytes(wav, sample_rate),
                text=" ".join(words), spk=f"spk{s}", utt_embedding=rng.standard_normal(embedding_dim),
                spk_embedding=spk_emb[s], speech_token=rng.integers(0, 6561, size=int(secs * 25)),
            )
        )  # fmt: skip
    return rows


def write_parquet(rows: list[dict], path: str, layout: str = "ours") -> None:
    if layout == "ours":
        import pyarrow as pa
        import pyarrow.parquet as pq

        from sovits2_jax.data.prep.parquet_writer import ROW_GROUP_ROWS, SCHEMA

        cols = {name: [r[name] for r in rows] for name in SCHEMA.names}
        table = pa.table({n: pa.array(cols[n], type=SCHEMA.field(n).type) for n in SCHEMA.names})
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
    elif layout == "cosyvoice":
        import pandas as pd

        df = pd.DataFrame()
        df["utt"] = [r["utt"] for r in rows]
        df["wav"] = [r["wav"] for r in rows]
        df["audio_data"] = [r["audio_data"] for r in rows]
        df["text"] = [r["text"] for r in rows]
        df["spk"] = [r["spk"] for r in rows]
        df["utt_embedding"] = [np.asarray(r["utt_embedding"], np.float32) for r in rows]
        df["spk_embedding"] = [np.asarray(r["spk_embedding"], np.float32) for r in rows]
        df["speech_token"] = [np.asarray(r["speech_token"], np.int32) for r in rows]
        df.to_parquet(path)
    else:
        raise ValueError(f"unknown parquet layout {layout!r}; expected 'ours' or 'cosyvoice'")


def write_corpus(des_dir: str, rows: list[dict], *, rows_per_file: int, layout: str = "ours") -> str:
    """Shards ``parquet_{i:09d}.tar`` with utt2/spk2 json maps and the three list files; returns data.list."""
    os.makedirs(des_dir, exist_ok=True)
    lists = {"data.list": [], "utt2data.list": [], "spk2data.list": []}
    for i, start in enumerate(range(0, len(rows), rows_per_file)):
        shard = rows[start : start + rows_per_file]
        path = os.path.join(des_dir, f"parquet_{i:09d}.tar")
        write_parquet(shard, path, layout)
        utt_json = os.path.join(des_dir, f"utt2parquet_{i:09d}.json")
        spk_json = os.path.join(des_dir, f"spk2parquet_{i:09d}.json")
        with open(utt_json, "w") as f:
            json.dump({r["utt"]: path for r in shard}, f)
        with open(spk_json, "w") as f:
            json.dump({r["spk"]: path for r in shard}, f)
        lists["data.list"].append(path)
        lists["utt2data.list"].append(utt_json)
        lists["spk2data.list"].append(spk_json)
    for name, paths in lists.items():
        with open(os.path.join(des_dir, name), "w") as f:
            f.write("".join(p + "\n" for p in paths))
    return os.path.join(des_dir, "data.list")
