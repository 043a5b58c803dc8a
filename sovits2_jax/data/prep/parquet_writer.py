"""Parquet shards in CosyVoice's schema, with data.list / utt2data.list / spk2data.list.

    python -m sovits2_jax.data.prep.parquet_writer --src_dir data/train --des_dir data/train/parquet \
        --num_utts_per_parquet 1000 --num_processes 2

Columns: utt, wav, audio_data (the audio file's bytes), text, spk, utt_embedding (list<double>), spk_embedding
(list<double>), speech_token (list<int64>), as CosyVoice's ``make_parquet_list.py`` writes them, so
``cosyvoice.dataset.processor.parquet_opener`` reads our shards. Shard ``i`` is ``parquet_{i:09d}.tar`` with
``utt2parquet_{i:09d}.json`` and ``spk2parquet_{i:09d}.json``. Every file is written to a temporary name and
renamed; a shard counts as done once its utt2parquet json (written last) lists exactly the planned utterances, so
a killed job re-run finishes the missing shards and ends with the same files as an uninterrupted run.
Utterances without audio, text, embedding or speech tokens are skipped, counted and listed in
``DES/skipped_parquet.tsv``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.data.prep import feature_store
from sovits2_jax.data.prep.kaldi import read_kaldi_dir
from sovits2_jax.data.prep.skiplog import SkipLog

log = logging.getLogger(__name__)

# rows per parquet row group: the unit the loader shuffles and deals to data shards, so that a fine-tuning set of a
# few hundred utterances still splits over 8 processes (one group per 1000-row file would not)
ROW_GROUP_ROWS = 32
MIN_ROWS_FOR_PROCESSES = 2000  # below this, starting worker processes costs more than it saves

SCHEMA = pa.schema(
    [
        ("utt", pa.string()),
        ("wav", pa.string()),
        ("audio_data", pa.binary()),
        ("text", pa.string()),
        ("spk", pa.string()),
        ("utt_embedding", pa.list_(pa.float64())),
        ("spk_embedding", pa.list_(pa.float64())),
        ("speech_token", pa.list_(pa.int64())),
    ]
)


def shard_paths(des_dir: str, index: int) -> tuple[str, str, str]:
    return (
        os.path.join(des_dir, f"parquet_{index:09d}.tar"),
        os.path.join(des_dir, f"utt2parquet_{index:09d}.json"),
        os.path.join(des_dir, f"spk2parquet_{index:09d}.json"),
    )


def _atomic_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def shard_done(des_dir: str, index: int, rows: list[dict]) -> bool:
    parquet, utt_json, spk_json = shard_paths(des_dir, index)
    if not (os.path.exists(parquet) and os.path.exists(spk_json) and os.path.exists(utt_json)):
        return False
    try:
        with open(utt_json, encoding="utf-8") as f:
            listed = json.load(f)
    except (OSError, ValueError):
        return False
    return list(listed) == [r["utt"] for r in rows] and all(v == parquet for v in listed.values())


def write_shard(des_dir: str, index: int, rows: list[dict]) -> int:
    """Write one shard (parquet, then spk2parquet, then utt2parquet json); returns its row count."""
    parquet, utt_json, spk_json = shard_paths(des_dir, index)
    columns = {name: [] for name in SCHEMA.names}
    for row in rows:
        with open(row["wav"], "rb") as f:
            columns["audio_data"].append(f.read())
        for name in ("utt", "wav", "text", "spk"):
            columns[name].append(row[name])
        columns["utt_embedding"].append(np.asarray(row["utt_embedding"], np.float64))
        columns["spk_embedding"].append(np.asarray(row["spk_embedding"], np.float64))
        columns["speech_token"].append(np.asarray(row["speech_token"], np.int64))
    table = pa.table({name: pa.array(columns[name], type=SCHEMA.field(name).type) for name in SCHEMA.names})
    tmp = f"{parquet}.tmp"
    pq.write_table(table, tmp, compression="snappy", row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, parquet)
    spks = list(dict.fromkeys(r["spk"] for r in rows))
    _atomic_text(spk_json, json.dumps({s: parquet for s in spks}, ensure_ascii=False, indent=2))
    _atomic_text(utt_json, json.dumps({r["utt"]: parquet for r in rows}, ensure_ascii=False, indent=2))
    return len(rows)


def _write_shard_job(args: tuple[str, int, list[dict]]) -> int:
    return write_shard(*args)


def collect_rows(src_dir: str, skips: SkipLog) -> list[dict]:
    """Utterances (wav.scp order) that have everything a row needs."""
    data = read_kaldi_dir(src_dir)
    utt2emb = feature_store.load_vectors(os.path.join(src_dir, "utt2embedding.npz"))
    spk2emb = feature_store.load_vectors(os.path.join(src_dir, "spk2embedding.npz"))
    utt2tok = feature_store.load_sequences(os.path.join(src_dir, "utt2speech_token.npz"))
    rows = []
    for utt, wav in data.utt2wav.items():
        spk, text = data.utt2spk[utt], data.utt2text[utt]
        if not text.strip():
            reason = "empty transcript"
        elif not os.path.isfile(wav) or os.path.getsize(wav) == 0:
            reason = "missing or zero-length audio file"
        elif utt not in utt2emb:
            reason = "no speaker embedding (see skipped_embedding.tsv)"
        elif spk not in spk2emb:
            reason = f"no embedding for speaker {spk}"
        elif utt not in utt2tok or len(utt2tok[utt]) == 0:
            reason = "no speech tokens (see skipped_speech_token.tsv)"
        else:
            reason = None
        if reason:
            skips.add(utt, reason)
            continue
        rows.append(
            dict(utt=utt, wav=wav, text=text, spk=spk, utt_embedding=utt2emb[utt], spk_embedding=spk2emb[spk],
                 speech_token=utt2tok[utt])
        )  # fmt: skip
    return rows


def make_parquet_list(
    src_dir: str, des_dir: str, *, num_utts_per_parquet: int = 1000, num_processes: int = 2
) -> tuple[list[str], SkipLog]:
    """Write all shards and the three list files; returns (parquet paths, skip log)."""
    if num_utts_per_parquet < 1:
        raise ValueError(f"parquet: --num_utts_per_parquet must be >= 1, got {num_utts_per_parquet}")
    des_dir = os.path.abspath(des_dir)
    os.makedirs(des_dir, exist_ok=True)
    skips = SkipLog("parquet")
    rows = collect_rows(src_dir, skips)
    if not rows:
        raise ValueError(f"parquet: no complete utterances in {src_dir}; {skips.summary()}")
    shards = [rows[i : i + num_utts_per_parquet] for i in range(0, len(rows), num_utts_per_parquet)]
    todo = [(des_dir, i, shard) for i, shard in enumerate(shards) if not shard_done(des_dir, i, shard)]
    if len(todo) < len(shards):
        log.info("parquet: %d of %d shards already written, resuming", len(shards) - len(todo), len(shards))
    total = sum(len(s) for _, _, s in todo)
    with tqdm(total=total, desc="parquet", unit="utt", disable=None, dynamic_ncols=True) as bar:
        rows_todo = sum(len(shard) for _, _, shard in todo)
        if num_processes <= 1 or len(todo) <= 1 or rows_todo < MIN_ROWS_FOR_PROCESSES:
            for job in todo:
                bar.update(_write_shard_job(job))
        else:
            ctx = multiprocessing.get_context("forkserver")
            with concurrent.futures.ProcessPoolExecutor(num_processes, mp_context=ctx) as pool:
                for future in concurrent.futures.as_completed([pool.submit(_write_shard_job, job) for job in todo]):
                    bar.update(future.result())
    parquets = [shard_paths(des_dir, i)[0] for i in range(len(shards))]
    _atomic_text(os.path.join(des_dir, "data.list"), "".join(p + "\n" for p in parquets))
    _atomic_text(
        os.path.join(des_dir, "utt2data.list"), "".join(shard_paths(des_dir, i)[1] + "\n" for i in range(len(shards)))
    )
    _atomic_text(
        os.path.join(des_dir, "spk2data.list"), "".join(shard_paths(des_dir, i)[2] + "\n" for i in range(len(shards)))
    )
    skips.write(os.path.join(des_dir, "skipped_parquet.tsv"))
    log.info("parquet: %d utterances in %d shards -> %s; %s", len(rows), len(shards), des_dir, skips.summary())
    return parquets, skips


def main(argv: list[str]) -> None:
    """CLI: Parquet shards and list files in ``--des_dir`` from the Kaldi dir ``--src_dir``."""
    cli.command(argv)
    f = flags.FLAGS
    make_parquet_list(  # logs its one summary line
        f.src_dir, f.des_dir, num_utts_per_parquet=f.num_utts_per_parquet, num_processes=f.num_processes
    )


if __name__ == "__main__":
    flags.DEFINE_string("src_dir", None, "prepared Kaldi data dir (with embeddings and tokens)", required=True)
    flags.DEFINE_string("des_dir", None, "output directory of the shards and list files", required=True)
    flags.DEFINE_integer("num_utts_per_parquet", 1000, "utterances per shard")
    flags.DEFINE_integer("num_processes", 2, "writer processes")
    cli.run_logged(main)
