"""Random access to the rows of CosyVoice-schema Parquet shards listed in a ``data.list``.

``build_index`` reads only the small columns (utt, spk, speech-token and text lengths) of every row group once
and gives each row a global id. ``RowReader`` fetches one row by (row group, row) and keeps a few decoded row
groups in an LRU cache: both our writer and CosyVoice's ``tools/make_parquet_list.py`` (pandas ``to_parquet``)
put a whole shard into one row group, so the unit of reading is a row group and the sampler keeps its reads local.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REQUIRED_COLUMNS = ("utt", "spk")


def read_data_list(path: str) -> list[str]:
    """Parquet paths from a ``data.list`` (one per line; relative paths are taken from the list's folder)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data list {path!r} not found")
    base = os.path.dirname(os.path.abspath(path))
    files = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.strip()
            if not p:
                continue
            if not os.path.isabs(p) and not os.path.exists(p):
                p = os.path.join(base, p)
            files.append(p)
    if not files:
        raise ValueError(f"data list {path!r} lists no parquet files")
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"data list {path!r}: {len(missing)} parquet files missing, first {missing[0]!r}")
    return files


@dataclasses.dataclass
class ParquetIndex:
    """One entry per row. ``group`` indexes ``group_file``/``group_in_file``; lengths are -1 when unknown."""

    files: list[str]
    group_file: np.ndarray  # [G] file number of each row group
    group_in_file: np.ndarray  # [G] row-group number inside its file
    group: np.ndarray  # [N] row group of each row
    row: np.ndarray  # [N] row inside its row group
    utt: list[str]
    spk: np.ndarray  # [N] speaker number into ``speakers``
    speakers: list[str]
    speech_token_len: np.ndarray  # [N]
    reject_token_len: np.ndarray  # [N] (DPO's rejected speech tokens)
    text_token_len: np.ndarray  # [N]
    audio_seconds: np.ndarray  # [N] (-1 unless measured)
    columns: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.utt)

    @property
    def num_groups(self) -> int:
        return len(self.group_file)

    def rows_of_group(self) -> list[np.ndarray]:
        order = np.argsort(self.group, kind="stable")
        bounds = np.searchsorted(self.group[order], np.arange(self.num_groups + 1))
        return [order[bounds[g] : bounds[g + 1]] for g in range(self.num_groups)]


def _audio_seconds(blobs: pa.Array) -> np.ndarray:
    import soundfile as sf

    out = np.full(len(blobs), -1.0, np.float64)
    for i, b in enumerate(blobs):
        data = b.as_py()
        if not data:
            continue
        try:
            info = sf.info(io.BytesIO(data))
            out[i] = info.frames / info.samplerate
        except Exception:  # corrupt audio: left at -1, the loader skips and counts it
            pass
    return out


def _list_lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Lengths of a list column's rows; null lists count as empty."""
    lens = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    return np.nan_to_num(lens.astype(np.float64), nan=0).astype(np.int32)


def build_index(
    files: list[str], *, tokenizer=None, text_column: str | None = None, measure_audio: bool = False
) -> ParquetIndex:
    """Indexes every row of ``files``; ``text_column`` (a list column of text ids; null or absent = 0) or else
    ``tokenizer`` (with ``encode``) gives text-token lengths; ``measure_audio`` reads audio headers (needed only when
    there are no speech tokens to derive durations from)."""
    group_file, group_in_file, group, row, utt, spk_names = [], [], [], [], [], []
    stl, rtl, ttl, secs = [], [], [], []
    columns: tuple[str, ...] | None = None
    for fi, path in enumerate(files):
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable parquet file ({exc.__class__.__name__}: {exc})") from exc
        names = tuple(pf.schema_arrow.names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"{path}: parquet lacks column(s) {missing}; has {list(names)}")
        columns = names if columns is None else tuple(c for c in columns if c in names)
        want = [c for c in ("utt", "spk", "speech_token", "reject_speech_token", "text") if c in names]
        if (tokenizer is None or text_column is not None) and "text" in want:
            want.remove("text")
        if text_column in names:
            want.append(text_column)
        for gi in range(pf.num_row_groups):
            t = pf.read_row_group(gi, columns=want)
            g = len(group_file)
            group_file.append(fi)
            group_in_file.append(gi)
            n = t.num_rows
            group.append(np.full(n, g, np.int32))
            row.append(np.arange(n, dtype=np.int32))
            utt.extend(t.column("utt").to_pylist())
            spk_names.extend(t.column("spk").to_pylist())
            for col, out in (("speech_token", stl), ("reject_speech_token", rtl)):
                out.append(_list_lengths(t.column(col)) if col in want else np.full(n, -1, np.int32))
            if text_column is not None:  # a file without the column has no text ids (the task says why)
                ttl.append(_list_lengths(t.column(text_column)) if text_column in want else np.zeros(n, np.int32))
            elif tokenizer is not None and "text" in want:
                ttl.append(np.asarray([len(tokenizer.encode(x or "")) for x in t.column("text").to_pylist()], np.int32))
            else:
                ttl.append(np.full(n, -1, np.int32))
            if measure_audio and "audio_data" in names:
                secs.append(_audio_seconds(pf.read_row_group(gi, columns=["audio_data"]).column("audio_data")))
            else:
                secs.append(np.full(n, -1.0))
    speakers = sorted(set(spk_names))
    spk_id = {s: i for i, s in enumerate(speakers)}
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)
    return ParquetIndex(
        files=list(files),
        group_file=np.asarray(group_file, np.int32),
        group_in_file=np.asarray(group_in_file, np.int32),
        group=cat(group, np.int32),
        row=cat(row, np.int32),
        utt=utt,
        spk=np.asarray([spk_id[s] for s in spk_names], np.int32),
        speakers=speakers,
        speech_token_len=cat(stl, np.int32),
        reject_token_len=cat(rtl, np.int32),
        text_token_len=cat(ttl, np.int32),
        audio_seconds=cat(secs, np.float64),
        columns=columns or (),
    )


def _value(column: pa.ChunkedArray, i: int):
    v = column[i]
    if pa.types.is_list(v.type) or pa.types.is_large_list(v.type):
        return None if not v.is_valid else v.values.to_numpy(zero_copy_only=False)
    return v.as_py()


class RowReader:
    """Thread-safe row access with an LRU cache of decoded row groups (bounded by ``cache_mb``)."""

    def __init__(self, index: ParquetIndex, columns: tuple[str, ...], *, cache_mb: float = 1024.0):
        missing = [c for c in columns if c not in index.columns]
        if missing:
            raise ValueError(f"parquet files lack column(s) {missing} needed by this pipeline; have {index.columns}")
        self.index = index
        self.columns = tuple(columns)
        self.cache_bytes = int(cache_mb * 2**20)
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: collections.OrderedDict[int, pa.Table] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._group_locks: dict[int, threading.Lock] = collections.defaultdict(threading.Lock)
        self.groups_read = 0

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("index", "columns", "cache_bytes")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_cache()

    def _table(self, g: int) -> pa.Table:
        with self._lock:
            t = self._cache.get(g)
            if t is not None:
                self._cache.move_to_end(g)
                return t
            glock = self._group_locks[g]
        with glock:
            with self._lock:
                t = self._cache.get(g)
            if t is None:
                path = self.index.files[self.index.group_file[g]]
                t = pq.ParquetFile(path).read_row_group(int(self.index.group_in_file[g]), columns=list(self.columns))
                with self._lock:
                    self.groups_read += 1
                    self._cache[g] = t
                    while len(self._cache) > 1 and sum(x.nbytes for x in self._cache.values()) > self.cache_bytes:
                        self._cache.popitem(last=False)
        return t

    def read(self, row_id: int) -> dict:
        """The row as a dict: strings / bytes as Python values, list columns as numpy arrays."""
        g, r = int(self.index.group[row_id]), int(self.index.row[row_id])
        t = self._table(g)
        return {name: _value(t.column(name), r) for name in self.columns}
