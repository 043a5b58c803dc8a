"""Multi-codebook speech codes in Parquet shards: GPT-SoVITS2's grouped residual VQ codes, which the ``gpt_sovits2``
data task reads with ``config.data.num_codebooks`` > 1.

``grvq_codes`` (the default ``config.data.codes_column``) is list<list<int32>>: K rows per utterance, row
``g * quantizers + q`` the codes of group g's residual stage q (``grvq.codes_to_rows``), all rows as long (one code
per 25 Hz frame); null where the row has none. Row 0 is the AR's codebook 0 (its ``speech_token``s), rows 1..K-1
codebooks 1..K-1.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from sovits2_jax.validation import ConfigError

COLUMN = "grvq_codes"


def codes(value) -> np.ndarray | None:
    """A row's value (as ``RowReader`` reads it) as [K, N] int32, or None when null or ragged."""
    if value is None:
        return None
    rows = [np.asarray(r, np.int32) for r in value]
    if not rows or any(r is None or r.ndim != 1 or len(r) != len(rows[0]) for r in rows):
        return None
    return np.stack(rows)


def num_codebooks(path: str, column: str = COLUMN) -> int | None:
    """K of a shard's first non-null row (None: no such column, or only nulls)."""
    pf = pq.ParquetFile(path)
    if column not in pf.schema_arrow.names:
        return None
    for batch in pf.iter_batches(batch_size=256, columns=[column]):
        for value in batch.column(0).to_pylist():
            if value is not None:
                return len(value)
    return None


def lengths(index, column: str = COLUMN) -> np.ndarray:
    """[N] int32: frames of each index row's codes (0 where null), read row group by row group."""
    out = []
    for f, g in zip(index.group_file, index.group_in_file):
        out.append(_first_lengths(pq.ParquetFile(index.files[f]).read_row_group(int(g), columns=[column]).column(0)))
    if not out:
        return np.zeros(0, np.int32)
    starts = np.cumsum([0, *map(len, out)])  # each row group's first row in the concatenation
    return np.concatenate(out)[starts[index.group] + index.row]


def _first_lengths(column) -> np.ndarray:
    """Length of each row's first list (codebook 0) of a list<list<...>> column; 0 where null or empty."""
    import pyarrow.compute as pc

    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros(0, np.int32)
    offsets = np.asarray(arr.offsets)
    inner = np.asarray(pc.fill_null(pc.list_value_length(arr.values), 0), np.int64)
    has_first = np.asarray(arr.is_valid()) & (np.diff(offsets) > 0)
    first = inner[np.minimum(offsets[:-1], max(len(inner) - 1, 0))] if len(inner) else np.zeros(len(arr), np.int64)
    return np.where(has_first, first, 0).astype(np.int32)


def check_files(paths, num: int, column: str = COLUMN) -> None:
    """ConfigError naming the shard when one lacks ``column`` or holds another number of codebooks."""
    for path in paths:
        k = num_codebooks(path, column)
        if k is None:
            raise ConfigError(
                f"{path}: no {column!r} column (multi-codebook codes), which config.data.num_codebooks={num} reads: "
                "run python -m sovits2_jax.data.prep.grvq_codes on its data.list"
            )
        if k != num:
            raise ConfigError(f"config.data.num_codebooks={num} but {path} holds {k} codebooks in {column!r}")
