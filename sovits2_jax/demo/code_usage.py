"""Per-codebook use of the grouped VQ's codes over a corpus (the ``grvq_codes`` column ``data.prep.grvq_codes``
wrote):

    python -m sovits2_jax.demo.code_usage --data_list WORK/data/train/parquet/data.list [--data_list ...] \\
        --out WORK/code_usage.json [--column grvq_codes]

Counts every codebook's codes over every row of every shard (``models.grvq.code_counts``) and writes, per codebook,
``used`` codes, ``usage`` (their fraction of the codebook) and ``perplexity`` (``models.grvq.code_usage``), with the
codebook size read from the shards' metadata; prints one line per codebook. ``demo.report`` shows the file.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.data import code_columns


def count(data_lists, column: str = code_columns.COLUMN) -> dict:
    """{column, codebook_size, utterances, frames, codebooks: [{used, usage, perplexity}, ...]} over the lists."""
    import pyarrow.parquet as pq

    from sovits2_jax.data.prep.grvq_codes import META_KEY
    from sovits2_jax.data.source import read_data_list
    from sovits2_jax.models import grvq

    counts, size, utterances = None, None, 0
    for data_list in data_lists:
        for path in read_data_list(data_list):
            schema = pq.read_schema(path)
            if column not in schema.names:
                raise cli.Error(f"{path}: no {column!r} column (python -m sovits2_jax.data.prep.grvq_codes)")
            info = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
            size = size or int(info.get("codebook_size", 0))
            if not size:
                raise cli.Error(f"{path}: its metadata gives no codebook size for {column!r}")
            for codes in pq.read_table(path, columns=[column]).column(column).to_pylist():
                if codes is None:
                    continue
                c = grvq.code_counts(np.asarray(codes, np.int64), size)
                counts = c if counts is None else counts + c
                utterances += 1
    if counts is None:
        raise cli.Error(f"no row of {', '.join(data_lists)} has codes in {column!r}")
    return dict(column=column, codebook_size=size, utterances=utterances, frames=int(counts[0].sum()),
                codebooks=grvq.code_usage(counts))  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    F = flags.FLAGS
    if not F.data_list or not F.out:
        raise cli.Error("give --data_list and --out")
    info = count(F.data_list, F.column)
    os.makedirs(os.path.dirname(os.path.abspath(F.out)), exist_ok=True)
    with open(F.out, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    for k, u in enumerate(info["codebooks"]):
        print(f"code_usage: codebook {k}: {int(u['used'])} of {info['codebook_size']} codes used "
              f"({u['usage']:.3f}), perplexity {u['perplexity']:.1f} over {info['frames']} frames")  # fmt: skip
    return 0


if __name__ == "__main__":
    flags.DEFINE_multi_string("data_list", [], "data.list of Parquet shards with the codes column")
    flags.DEFINE_string("out", None, "the JSON file to write")
    flags.DEFINE_string("column", code_columns.COLUMN, "the codes column")
    cli.run(main)
