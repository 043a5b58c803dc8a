"""The multi-codebook codes the GPT-SoVITS2 AR trains on (``config.data.num_codebooks`` > 1), added to prepared Parquet
shards as a new column, from a trained ``ssl_grvq`` VITS over the shards' SSL features:

    python -m sovits2_jax.data.prep.grvq_codes --data_list data/train/parquet/data.list --vits exp/vits_grvq4 \
        [--ssl_column ssl_feature] [--column grvq_codes] [--batch_size 16] [--overwrite]

``--vits`` is a checkpoint of ours holding the ``vits`` part with its ``grvq`` codebooks (a trainer workdir or step,
an averaged or converted checkpoint). Each row's SSL features (``data/prep/ssl_features.py``'s column, 50 Hz) go
through the model's ``extract_codes`` (``ssl_proj`` at 25 Hz, then the grouped residual VQ in eval mode: the
codebooks are not updated), and the shard is rewritten with ``column`` (list<list<int32>>: K = groups x quantizers
rows of one code per 25 Hz frame, ``data/code_columns.py``; null where the row has no features). The Parquet metadata
key ``sovits2_jax.grvq_codes`` records the column, K, the codebook size, the model and the rows left null. A shard is
rewritten atomically; a rerun keeps the shards that have the column (``overwrite`` recomputes them).
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

from sovits2_jax import cli
from sovits2_jax.data import code_columns, source
from sovits2_jax.data.prep import ssl_features

log = logging.getLogger(__name__)

META_KEY = b"sovits2_jax.grvq_codes"
BUCKET = 64  # SSL frames are padded to a multiple of this (one compiled shape per multiple)

Extract = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # [T50, dim] features -> [K, T25] codes each


def row_features(table: pa.Table, column: str) -> list[np.ndarray | None]:
    """Each row's [frames, dim] float32 SSL features (None where null)."""
    feats, dims = table.column(column).to_pylist(), table.column(ssl_features.dim_column(column)).to_pylist()
    return [None if f is None or not d else np.asarray(f, np.float32).reshape(-1, d) for f, d in zip(feats, dims)]


def codes_array(codes: list[np.ndarray | None]) -> pa.Array:
    """list<list<int32>> of [K, N] arrays, null for None."""
    return pa.array([None if c is None else np.asarray(c, np.int32).tolist() for c in codes],
                    pa.list_(pa.list_(pa.int32())))  # fmt: skip


def write_shard(path: str, extract: Extract, *, info: dict, ssl_column: str, column: str) -> list[str]:
    """Rewrites one shard with the codes column (replacing an older one); returns the utterances left null."""
    pf = pq.ParquetFile(path)
    group_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1
    table = pf.read()
    if ssl_column not in table.column_names:
        raise ValueError(f"{path}: no {ssl_column!r} column: run python -m sovits2_jax.data.prep.ssl_features first")
    table = table.drop_columns([c for c in (column,) if c in table.column_names])
    feats = row_features(table, ssl_column)
    kept = [i for i, f in enumerate(feats) if f is not None and len(f) >= 2]
    codes: list[np.ndarray | None] = [None] * len(feats)
    for i, c in zip(kept, extract([feats[i] for i in kept]) if kept else []):
        codes[i] = c
    utts = table.column("utt").to_pylist()
    missing = [utts[i] for i, c in enumerate(codes) if c is None]
    table = table.append_column(column, codes_array(codes))
    meta = json.dumps({**info, "column": column, "missing": missing}).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: meta})
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, compression="snappy", row_group_size=max(1, group_rows))
    os.replace(tmp, path)
    return missing


def add_codes(data_list: str, extract: Extract, *, info: dict, ssl_column: str = ssl_features.COLUMN,
              column: str = code_columns.COLUMN, overwrite: bool = False) -> int:  # fmt: skip
    """Adds ``column`` to every shard of ``data_list``; returns the number of rows left null."""
    missing = kept = 0
    files = source.read_data_list(data_list)
    for path in files:
        if not overwrite and column in pq.read_schema(path).names:
            kept += 1
            continue
        missing += len(write_shard(path, extract, info=info, ssl_column=ssl_column, column=column))
    log.info("grvq_codes: %d shards -> %s (%d kept as they were); %d rows without codes (no SSL features)",
             len(files), column, kept, missing)  # fmt: skip
    return missing


def extractor(model, vq_state, batch_size: int = 16) -> Extract:
    """``extract_codes`` of an ``ssl_grvq`` SynthesizerTrn in length-sorted batches padded to ``BUCKET`` frames."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params = nnx.split(model)

    @jax.jit
    def run(params, state, ssl, lengths):
        return nnx.merge(graphdef, params).extract_codes(ssl, state, ssl_lengths=lengths)

    def extract(feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(feats)
        order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            t = -(-max(len(feats[i]) for i in rows) // BUCKET) * BUCKET
            ssl = np.zeros((batch_size, t, feats[rows[0]].shape[1]), np.float32)
            lengths = np.zeros(batch_size, np.int32)
            for b, i in enumerate(rows):
                ssl[b, : len(feats[i])], lengths[b] = feats[i], len(feats[i])
            codes = np.asarray(run(params, vq_state, jnp.asarray(ssl), jnp.asarray(lengths)))  # [K, B, T25]
            for b, i in enumerate(rows):
                out[i] = codes[:, b, : int(np.sum(codes[0, b] >= 0))]
        return out

    return extract


def load_vits(path: str):
    """(the ssl_grvq SynthesizerTrn of ``path``, its codebook state dict, its config)."""
    from sovits2_jax.convert import parts
    from sovits2_jax.convert.mapping import ConversionError, flatten
    from sovits2_jax.convert.params import params_from_flat

    try:
        params, config = parts.load(path, "vits")
        buffers = parts.load_buffers(path, "vits")
        graphdef, state = params_from_flat(lambda: parts.build_module("vits", config), flatten(params))
    except ConversionError as e:
        raise cli.Error(f"--vits={path}: {e}") from None
    if config.content != "ssl_grvq" or "grvq" not in buffers:
        raise cli.Error(f"--vits={path}: not an ssl_grvq VITS with its codebooks (content {config.content!r})")
    from flax import nnx

    return nnx.merge(graphdef, state), buffers["grvq"], config


def main(argv: list[str]) -> None:
    cli.command(argv)
    f = flags.FLAGS
    model, vq_state, config = load_vits(f.vits)
    info = dict(num_codebooks=config.num_codebooks, codebook_size=config.codebook_size, model=str(f.vits))
    try:
        add_codes(f.data_list, extractor(model, vq_state, f.batch_size), info=info, ssl_column=f.ssl_column,
                  column=f.column, overwrite=f.overwrite)  # fmt: skip
    except (OSError, ValueError) as e:
        raise cli.Error(str(e)) from None


if __name__ == "__main__":
    flags.DEFINE_string("data_list", None, "data.list of the Parquet shards to extend", required=True)
    flags.DEFINE_string("vits", None, "checkpoint of an ssl_grvq VITS (its params and grvq codebooks)", required=True)
    flags.DEFINE_string("ssl_column", ssl_features.COLUMN, "the SSL feature column (its dim in <ssl_column>_dim)")
    flags.DEFINE_string("column", code_columns.COLUMN, "the new column")
    flags.DEFINE_integer("batch_size", 16, "rows per batch (padded to a multiple of 64 frames)")
    flags.DEFINE_bool("overwrite", False, "recompute shards that already have the column")
    cli.run_logged(main)
