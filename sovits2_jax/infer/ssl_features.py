"""The SSL-feature data preparation stage: HuBERT features of every utterance into the Parquet shards' new
``ssl_feature`` column (the stage itself: ``sovits2_jax/data/prep/ssl_features.py``; it lives under infer/ because
it loads the encoder's weights through ``convert.parts``, which data/ may not import).

    python -m sovits2_jax.infer.ssl_features --data_list data/train/parquet/data.list \
        [--ssl_model pretrained/chinese-hubert-base] [--batch_size 8] [--overwrite]

``--ssl_model`` is a HF HuBERT directory (chinese-hubert-base, mHuBERT-147) or an Orbax checkpoint of ours holding
the ``hubert`` part; without it a random-init encoder of the tiny shape (32-d features) runs, for tests and pipeline
checks only (the log says so). Resumable; unusable audio is skipped, counted and listed (see the stage).
"""

from __future__ import annotations

import logging

from absl import flags

from sovits2_jax import cli
from sovits2_jax.data.prep import ssl_features
from sovits2_jax.models import hubert

log = logging.getLogger(__name__)


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


def extract_corpus(data_list: str, model: hubert.HubertModel, model_name: str, *, batch_size: int = 8,
                   column: str = ssl_features.COLUMN, chunk_rows: int = ssl_features.CHUNK_ROWS,
                   overwrite: bool = False):  # fmt: skip
    """Runs the stage over ``data_list`` with ``model`` (bucketed batches of ``batch_size``); returns its SkipLog."""
    extractor = hubert.BucketedExtractor(model, batch_size=batch_size)
    return ssl_features.add_ssl_features(
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


if __name__ == "__main__":
    flags.DEFINE_string("data_list", None, "data.list of the Parquet shards to extend", required=True)
    flags.DEFINE_string("ssl_model", "", "HF HuBERT directory or Orbax checkpoint (empty: random-init tiny encoder)")
    flags.DEFINE_string("column", ssl_features.COLUMN, "the new column (its dim goes to <column>_dim)")
    flags.DEFINE_integer("batch_size", 8, "rows per encoder batch (padded to a length bucket)")
    flags.DEFINE_integer("chunk_rows", ssl_features.CHUNK_ROWS, "rows decoded and bucketed together")
    flags.DEFINE_bool("overwrite", False, "recompute shards that already have the column")
    flags.DEFINE_integer("seed", 0, "seed of the random-init encoder (without --ssl_model)")
    cli.run_logged(main)
