"""SSL features (HuBERT's last hidden state, what GPT-SoVITS trains its SoVITS on) added to prepared Parquet shards
as a new column:

    python -m sovits2_jax.data.prep.ssl_features --data_list data/train/parquet/data.list \
        [--ssl_model pretrained/chinese-hubert-base] [--batch_size 8] [--overwrite] [--save_to DIR]

``--ssl_model`` is a HF HuBERT directory (chinese-hubert-base, mHuBERT-147) or an Orbax checkpoint of ours holding
the ``hubert`` part; without it a random-init encoder of the tiny shape (32-d features) runs, for tests and pipeline
checks only (the log says so). ``--save_to`` writes the encoder that ran as our checkpoint of the ``hubert`` part,
so that inference (GPT-SoVITS2 with an ``ssl_grvq`` VITS: ``MODEL_DIR/hubert/``) reads the same features.

For every shard of a ``data.list`` (stage 3's output): each row's ``audio_data`` is decoded and resampled to 16 kHz,
the waveforms are run through the encoder in length buckets (``models.hubert.BucketedExtractor``: sorted by
length, padded to the smallest bucket, each (batch, bucket) shape compiled once), and the shard is rewritten with
two more columns, every existing column kept as it was:

- ``ssl_feature`` (list<halffloat>): the row's [frames, dim] features flattened row-major, 50 frames per second
  (320 samples at 16 kHz per frame); float16 halves the size, and HuBERT's hidden states are far inside its range;
- ``ssl_feature_dim`` (int32): dim (768 for chinese-hubert-base and mHuBERT-147).

A row whose audio cannot be used (unreadable, non-finite, shorter than the encoder's 400-sample receptive field) or
whose features are not finite in float16 gets nulls in both, and is counted and listed with its reason in
``skipped_ssl_features.tsv`` beside data.list. The shard's Parquet metadata key ``sovits2_jax.ssl_features``
records the column, dim, dtype, frame rate, the encoder and the skipped rows. A shard is rewritten atomically
(temporary name, then rename), so a killed run leaves each shard either untouched or complete; a rerun skips the
complete ones (``overwrite`` recomputes them) and ends with the same files and skip list as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.io import AudioError, load_audio
from sovits2_jax.data import source
from sovits2_jax.data.prep.skiplog import SkipLog
from sovits2_jax.models import hubert

log = logging.getLogger(__name__)

COLUMN = "ssl_feature"
SAMPLE_RATE = 16000
FRAME_RATE = 50
META_KEY = b"sovits2_jax.ssl_features"
SKIPPED_FILE = "skipped_ssl_features.tsv"
CHUNK_ROWS = 256  # waveforms handed to the extractor at once (it sorts and buckets them)

Extract = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # 16 kHz waveforms -> [frames, dim] each


def dim_column(column: str) -> str:
    return f"{column}_dim"


def written_info(path: str, column: str = COLUMN) -> dict | None:
    """What this stage recorded in a shard that has ``column`` (dim, model, skipped rows), None when the shard has
    no such column yet; a column written by another tool reads as ``{"model": None, "dim": None, "skipped": {}}``."""
    schema = pq.read_schema(path)
    if column not in schema.names:
        return None
    raw = (schema.metadata or {}).get(META_KEY)
    info = json.loads(raw) if raw else {}
    if info.get("column") != column:
        return {"model": None, "dim": None, "skipped": {}}
    return info


def load_16k(blob: bytes | None) -> tuple[np.ndarray | None, str | None]:
    """(16 kHz mono waveform, None) or (None, the reason it is unusable)."""
    if not blob:
        return None, "empty audio"
    try:
        wav, _ = load_audio(blob, target_sr=SAMPLE_RATE)
    except AudioError as exc:
        detail = str(exc).split(": ", 1)[-1].removeprefix("unreadable audio").strip(" ()")
        return None, f"unreadable audio: {detail}"
    if not np.all(np.isfinite(wav)):
        return None, "non-finite audio"
    return wav, None


def shard_features(
    table: pa.Table, extract: Extract, min_samples: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[list[np.ndarray | None], dict[str, str]]:
    """float16 [frames, dim] features per row of ``table`` (None for unusable rows) and {utt: reason} of those."""
    utts = table.column("utt").to_pylist()
    audio = table.column("audio_data")
    out: list[np.ndarray | None] = [None] * len(utts)
    reasons: dict[str, str] = {}
    for start in range(0, len(utts), max(1, chunk_rows)):
        rows, wavs = [], []
        for i in range(start, min(len(utts), start + chunk_rows)):
            wav, reason = load_16k(audio[i].as_py())
            if reason is None and len(wav) < min_samples:
                reason = f"too short: {len(wav)} samples at 16 kHz, the encoder needs {min_samples}"
            if reason is not None:
                reasons[utts[i]] = reason
                continue
            rows.append(i)
            wavs.append(wav)
        for i, feats in zip(rows, extract(wavs) if wavs else []):
            half = np.asarray(feats, np.float16)
            if not np.all(np.isfinite(half)):
                reasons[utts[i]] = "non-finite features (in float16)"
                continue
            out[i] = half
    return out, reasons


def feature_columns(features: list[np.ndarray | None], dim: int) -> tuple[pa.Array, pa.Array]:
    """(list<halffloat> of the flattened features, int32 dims), null where a row has none."""
    valid = np.array([f is not None for f in features], bool)
    sizes = np.array([0 if f is None else f.size for f in features], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    kept = [f.reshape(-1) for f in features if f is not None]
    values = np.concatenate(kept) if kept else np.zeros(0, np.float16)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float16()), mask=pa.array(~valid))
    lists = lists.cast(pa.list_(pa.float16()))
    dims = pa.array(np.full(len(features), dim, np.int32), pa.int32(), mask=~valid)
    return lists, dims


def write_shard(path: str, extract: Extract, *, dim: int, min_samples: int, model_name: str, column: str = COLUMN,
                chunk_rows: int = CHUNK_ROWS) -> dict[str, str]:  # fmt: skip
    """Rewrites one shard with the feature columns (replacing older ones); returns {utt: reason} of skipped rows."""
    pf = pq.ParquetFile(path)
    group_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1
    table = pf.read()
    table = table.drop_columns([c for c in (column, dim_column(column)) if c in table.column_names])
    features, reasons = shard_features(table, extract, min_samples, chunk_rows)
    lists, dims = feature_columns(features, dim)
    table = table.append_column(column, lists).append_column(dim_column(column), dims)
    info = dict(column=column, dim=dim, dtype="float16", frame_rate=FRAME_RATE, model=model_name, skipped=reasons)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(info).encode()})
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, compression="snappy", row_group_size=max(1, group_rows))
    os.replace(tmp, path)
    return reasons


def add_ssl_features(
    data_list: str,
    extract: Extract,
    *,
    dim: int,
    min_samples: int,
    model_name: str,
    column: str = COLUMN,
    chunk_rows: int = CHUNK_ROWS,
    overwrite: bool = False,
) -> SkipLog:
    """Adds ``column`` to every shard of ``data_list`` (see the module docstring); shards that have it are kept
    unless ``overwrite``. Returns the skip log (also written to ``skipped_ssl_features.tsv`` beside data.list)."""
    files = source.read_data_list(data_list)
    skips = SkipLog("ssl_features")
    resumed = rows = 0
    for path in tqdm(files, desc="ssl features", unit="shard", disable=None, dynamic_ncols=True):
        info = None if overwrite else written_info(path, column)
        if info is not None:
            if info["dim"] not in (None, dim):
                raise ValueError(
                    f"{path}: {column} holds {info['dim']}-d features of {info['model']}, this encoder gives {dim}-d; "
                    "rerun with --overwrite (or give another --column)"
                )
            reasons = info["skipped"]
            resumed += 1
        else:
            reasons = write_shard(path, extract, dim=dim, min_samples=min_samples, model_name=model_name,
                                  column=column, chunk_rows=chunk_rows)  # fmt: skip
        for utt, reason in reasons.items():
            skips.add(utt, reason)
        rows += pq.ParquetFile(path).metadata.num_rows
    if resumed:
        log.info("ssl_features: %d of %d shards already had %s, kept", resumed, len(files), column)
    skips.write(os.path.join(os.path.dirname(os.path.abspath(data_list)), SKIPPED_FILE))
    log.info(
        "ssl_features: %d utterances in %d shards -> %s (%d-d float16 at %d frames/s, %s); %s",
        rows - len(skips), len(files), column, dim, FRAME_RATE, model_name, skips.summary(),
    )  # fmt: skip
    return skips


def load_encoder(path: str | None, seed: int = 0) -> tuple[hubert.HubertModel, str]:
    """(the encoder with its weights, its name for the shards' metadata): ``path``'s HuBERT, or a random-init tiny
    one when ``path`` is empty."""
    from flax import nnx

    if not path:
        log.info("ssl_features: no --ssl_model: a random-init tiny HuBERT (32-d features), for tests only")
        return hubert.HubertModel(hubert.tiny(), rngs=nnx.Rngs(seed)), f"random-init tiny HuBERT (seed {seed})"
    from sovits2_jax.convert import parts
    from sovits2_jax.convert.mapping import ConversionError, flatten
    from sovits2_jax.convert.params import params_from_flat

    try:
        params, config = parts.load(path, "hubert")
        graphdef, state = params_from_flat(lambda: parts.build_module("hubert", config), flatten(params))
    except ConversionError as e:
        raise cli.Error(f"--ssl_model={path}: {e}") from None
    return nnx.merge(graphdef, state), str(path)


def save_encoder(model: hubert.HubertModel, dst: str) -> None:
    """``model`` as our Orbax checkpoint of the ``hubert`` part (format ``hf_hubert``), written atomically."""
    from flax import nnx

    from sovits2_jax.convert import checkpoint as ckpt

    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    meta = {"format": "hf_hubert", "part": "hubert", "model": "HubertModel", "config": model.config.to_dict()}
    ckpt.save_checkpoint(dst, params, meta)
    log.info("ssl_features: saved the encoder to %s", dst)


def extract_corpus(data_list: str, model: hubert.HubertModel, model_name: str, *, batch_size: int = 8,
                   column: str = COLUMN, chunk_rows: int = CHUNK_ROWS,
                   overwrite: bool = False):  # fmt: skip
    """Runs the stage over ``data_list`` with ``model`` (bucketed batches of ``batch_size``); returns its SkipLog."""
    extractor = hubert.BucketedExtractor(model, batch_size=batch_size)
    return add_ssl_features(
        data_list, extractor, dim=model.config.hidden_size, min_samples=model.config.min_samples,
        model_name=model_name, column=column, chunk_rows=chunk_rows, overwrite=overwrite,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    cli.command(argv)
    f = flags.FLAGS
    model, name = load_encoder(f.ssl_model, f.seed)
    try:
        extract_corpus(f.data_list, model, name, batch_size=f.batch_size, column=f.column, chunk_rows=f.chunk_rows,
                       overwrite=f.overwrite)  # fmt: skip
    except (OSError, ValueError) as e:
        raise cli.Error(str(e)) from None
    if f.save_to:
        save_encoder(model, f.save_to)


if __name__ == "__main__":
    flags.DEFINE_string("data_list", None, "data.list of the Parquet shards to extend", required=True)
    flags.DEFINE_string("ssl_model", "", "HF HuBERT directory or Orbax checkpoint (empty: random-init tiny encoder)")
    flags.DEFINE_string("column", COLUMN, "the new column (its dim goes to <column>_dim)")
    flags.DEFINE_integer("batch_size", 8, "rows per encoder batch (padded to a length bucket)")
    flags.DEFINE_integer("chunk_rows", CHUNK_ROWS, "rows decoded and bucketed together")
    flags.DEFINE_bool("overwrite", False, "recompute shards that already have the column")
    flags.DEFINE_integer("seed", 0, "seed of the random-init encoder (without --ssl_model)")
    flags.DEFINE_string("save_to", "", "also write the encoder that ran here (our checkpoint of the hubert part)")
    cli.run_logged(main)
