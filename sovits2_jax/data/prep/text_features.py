"""GPT-SoVITS2's text inputs: each transcript's ids in the text encoder's tokenizer and the encoder's per-token
features, added to the Parquet shards of data lists.

    python -m sovits2_jax.data.prep.text_features --data_list data/train/parquet/data.list \
        --data_list data/dev/parquet/data.list --text_encoder DIR|random [--save_to DIR] [--vocab_size 1000]

Every shard of every list gets the columns ``bge_m3_token`` and ``bge_m3_feature`` (``data/text_columns.py``); its
other columns are kept as they were, so every family reads the same files. Each shard's rows are tokenized and
encoded by ``xlm_roberta.encode`` (jitted, in length buckets of ``--batch_size`` rows). A row whose transcript is
empty or longer than the encoder's positions keeps null in both columns (the data task skips it); it is counted,
logged and listed in ``skipped_text_features.tsv`` beside its data.list. A shard is written to a temporary file and
renamed, and its metadata records the encoder's fingerprint and the skipped rows: a rerun with the same encoder
skips finished shards (still listing their skipped rows); another encoder rewrites them.

``--text_encoder DIR``: a BGE-M3 directory, HF or converted, with its tokenizer files (``convert/text_encoder.py``).
``--text_encoder random``: a random-init encoder of ``xlm_roberta.tiny``'s shape and a unigram sentencepiece
tokenizer (at most ``--vocab_size`` pieces) trained on the first list's transcripts, saved to ``--save_to`` (and
reused from there by a rerun), so training and inference use the same pair.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.convert import text_encoder as text_encoder_dir
from sovits2_jax.data import source, text_columns
from sovits2_jax.data.prep.skiplog import SkipLog

log = logging.getLogger(__name__)

RANDOM = "random"
SKIP_FILE = "skipped_text_features.tsv"


# ------------------------------------------------------------------------------------------- random stand-in


def train_sentencepiece(texts: Sequence[str], vocab_size: int) -> bytes:
    """A unigram sentencepiece model of ``texts`` with at most ``vocab_size`` pieces (fewer when the text is too
    small for that many), serialised; sentencepiece's default special ids, as XLM-RoBERTa's model has them."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def transcripts(data_list: str) -> list[str]:
    """The non-empty transcripts of a list's shards, in list order."""
    out = []
    for path in source.read_data_list(data_list):
        out += [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t and t.strip()]
    return out


def random_text_encoder(save_to: str, train_list: str, *, vocab_size: int = 1000, seed: int = 0) -> Path:
    """``save_to`` holding a random-init tiny encoder and a tokenizer trained on ``train_list``'s transcripts (made
    unless it already holds a text encoder)."""
    from flax import nnx

    from sovits2_jax.models import xlm_roberta
    from sovits2_jax.text.bge_m3_tokenizer import SENTENCEPIECE_MODEL, BgeM3Tokenizer

    if text_encoder_dir.is_text_encoder(save_to):
        log.info("text_features: reusing the random-init text encoder in %s", save_to)
        return Path(save_to)
    texts = transcripts(train_list)
    if not texts:
        raise cli.Error(f"text_features: {train_list} has no transcripts to train a tokenizer on")
    spm = train_sentencepiece(texts, vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SENTENCEPIECE_MODEL).write_bytes(spm)
        tokenizer = BgeM3Tokenizer.from_directory(tmp)
    config = xlm_roberta.tiny(vocab_size=tokenizer.vocab_size, with_pooler=False)
    model = xlm_roberta.XLMRobertaModel(config, rngs=nnx.Rngs(seed))
    text_encoder_dir.save(save_to, model, {SENTENCEPIECE_MODEL: spm})
    log.info(
        "text_features: --text_encoder=random: a random-init tiny encoder (%d layers, width %d) and a %d-id "
        "sentencepiece tokenizer trained on %d transcripts of %s, saved to %s (inference uses the same pair)",
        config.num_layers, config.hidden_size, tokenizer.vocab_size, len(texts), train_list, save_to,
    )  # fmt: skip
    return Path(save_to)


# ---------------------------------------------------------------------------------------------------- shards


def shard_done(path: str, fingerprint: str) -> dict | None:
    """The shard's text-feature metadata when it was written by the encoder of ``fingerprint``, else None."""
    info = text_columns.read_info(path)
    names = pq.read_schema(path).names
    if info is None or info.get("fingerprint") != fingerprint or not all(c in names for c in text_columns.COLUMNS):
        return None
    return info


def encode_rows(encoder, texts: Sequence[str | None], *, batch_size: int) -> tuple[list, list, dict[int, str]]:
    """(ids per row, float16 [len(ids), dim] features per row, {row: skip reason}); skipped rows hold None."""
    ids: list = [None] * len(texts)
    skipped = {}
    for i, text in enumerate(texts):
        if not text or not text.strip():
            skipped[i] = "empty transcript"
            continue
        row = encoder.tokenize(text)
        if len(row) > encoder.max_tokens:
            skipped[i] = f"longer than the text encoder's positions: {len(row)} > {encoder.max_tokens} tokens"
            continue
        ids[i] = row
    keep = [i for i, row in enumerate(ids) if row is not None]
    features: list = [None] * len(texts)
    for i, f in zip(keep, encoder.features([ids[i] for i in keep], batch_size=batch_size) if keep else []):
        features[i] = f.astype(np.float16)
    return ids, features, skipped


def write_shard(path: str, encoder, fingerprint: str, *, batch_size: int) -> dict[str, str]:
    """Adds (or replaces) the text-feature columns of one shard in place; returns its skipped rows {utt: reason}."""
    pf = pq.ParquetFile(path)
    row_group = pf.metadata.row_group(0).num_rows if pf.num_row_groups else None
    table = pf.read()
    table = table.drop_columns([c for c in text_columns.COLUMNS if c in table.column_names])
    utts, texts = table.column("utt").to_pylist(), table.column("text").to_pylist()
    ids, features, skipped = encode_rows(encoder, texts, batch_size=batch_size)
    tokens = pa.array([None if r is None else np.asarray(r, np.int32) for r in ids], type=pa.list_(pa.int32()))
    flat = pa.array([None if f is None else f.reshape(-1) for f in features], type=pa.list_(pa.float16()))
    table = table.append_column(text_columns.TOKEN, tokens).append_column(text_columns.FEATURE, flat)
    skipped_utts = {utts[i]: reason for i, reason in sorted(skipped.items())}
    info = dict(fingerprint=fingerprint, dim=encoder.hidden_size, vocab_size=encoder.vocab_size,
                source=str(encoder.source), skipped=skipped_utts)  # fmt: skip
    metadata = dict(table.schema.metadata or {})
    metadata[text_columns.METADATA_KEY.encode()] = json.dumps(info).encode()
    tmp = f"{path}.tmp"
    pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="snappy", row_group_size=row_group)
    os.replace(tmp, path)
    return skipped_utts


def add_text_features(data_lists: Sequence[str], encoder, *, batch_size: int = 16) -> dict[str, SkipLog]:
    """Adds the columns to every shard of ``data_lists`` with ``encoder`` (a ``convert.text_encoder.TextEncoder``);
    writes each list's ``skipped_text_features.tsv``; returns {data list: its skip log}."""
    fingerprint = encoder.fingerprint()
    out, seen = {}, set()
    for data_list in data_lists:
        files = [p for p in source.read_data_list(data_list) if p not in seen]
        seen.update(files)
        skips = SkipLog("text_features")
        todo = []
        for path in files:
            info = shard_done(path, fingerprint)
            if info is None:
                todo.append(path)
            else:
                for utt, reason in info["skipped"].items():
                    skips.record(utt, reason)
        if len(todo) < len(files):
            log.info("text_features: %d of %d shards of %s already done, resuming", len(files) - len(todo),
                     len(files), data_list)  # fmt: skip
        for path in tqdm(todo, desc="text_features", unit="shard", disable=None, dynamic_ncols=True):
            for utt, reason in write_shard(path, encoder, fingerprint, batch_size=batch_size).items():
                skips.add(utt, reason)
        skips.write(os.path.join(os.path.dirname(os.path.abspath(data_list)), SKIP_FILE))
        log.info("text_features: %d shards of %s carry %s (width %d) from %s; %s", len(files), data_list,
                 " and ".join(text_columns.COLUMNS), encoder.hidden_size, encoder.source, skips.summary())  # fmt: skip
        out[data_list] = skips
    return out


def main(argv: list[str]) -> None:
    """CLI: the text-feature columns of ``--data_list`` (repeatable) from ``--text_encoder``."""
    cli.command(argv)
    f = flags.FLAGS
    if f.batch_size < 1:
        raise cli.Error(f"--batch_size must be >= 1, got {f.batch_size}")
    if f.text_encoder == RANDOM:
        if not f.save_to:
            raise cli.Error("--text_encoder=random needs --save_to DIR (where the encoder and tokenizer are kept)")
        path = random_text_encoder(f.save_to, f.data_list[0], vocab_size=f.vocab_size, seed=f.seed)
    else:
        path = f.text_encoder
    from sovits2_jax.convert.mapping import ConversionError

    try:
        encoder = text_encoder_dir.load(path)
    except (ConversionError, FileNotFoundError) as e:
        raise cli.Error(f"--text_encoder: {e}") from e
    add_text_features(f.data_list, encoder, batch_size=f.batch_size)


if __name__ == "__main__":
    flags.DEFINE_multi_string("data_list", None, "data.list of Parquet shards (repeatable)", required=True)
    flags.DEFINE_string("text_encoder", RANDOM, "a BGE-M3 directory (HF or converted), or 'random'")
    flags.DEFINE_string("save_to", "", "with --text_encoder=random: the directory the random pair is saved to")
    flags.DEFINE_integer("vocab_size", 1000, "with --text_encoder=random: at most this many sentencepiece pieces")
    flags.DEFINE_integer("batch_size", 16, "rows per encoder call")
    flags.DEFINE_integer("seed", 0, "with --text_encoder=random: the encoder's initialisation seed")
    cli.run_logged(main)
