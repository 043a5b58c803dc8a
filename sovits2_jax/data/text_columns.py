"""The text-encoder columns of GPT-SoVITS2's Parquet shards: written by ``data/prep/text_features.py`` beside the
CosyVoice columns, read by the ``gpt_sovits2`` data task with ``config.data.text_source="bge_m3"``.

- ``bge_m3_token`` list<int32>: ``<s>``, the transcript's ids in the text encoder's tokenizer, ``</s>``;
- ``bge_m3_feature`` list<float16>: the encoder's last hidden state, [len(ids), dim] row-major;
- both null where the row was skipped (empty transcript, longer than the encoder's positions);
- the schema metadata ``sovits2_jax.text_features``: JSON with the encoder's ``fingerprint``, ``dim``,
  ``vocab_size``, ``source`` directory and the ``skipped`` rows ({utt: reason}).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

TOKEN = "bge_m3_token"
FEATURE = "bge_m3_feature"
COLUMNS = (TOKEN, FEATURE)
METADATA_KEY = "sovits2_jax.text_features"


def read_info(path: str) -> dict | None:
    """The text-feature metadata of a Parquet file, or None when it has none (not prepared)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY.encode())
    return None if raw is None else json.loads(raw)


def features(ids: np.ndarray, flat: np.ndarray | None, dim: int) -> np.ndarray | None:
    """A row's flat features as [len(ids), dim] float16, or None when they do not have that shape."""
    if flat is None or len(flat) != len(ids) * dim:
        return None
    return np.asarray(flat, np.float16).reshape(len(ids), dim)


def check_files(paths, dim: int) -> None:
    """ValueError naming the shard when one lacks the text encoder's columns or holds features of another width."""
    for path in paths:
        info = read_info(path)
        if info is None:
            raise ValueError(
                f"{path}: no text encoder columns ({', '.join(COLUMNS)}), which config.data.text_source='bge_m3' "
                "reads: run python -m sovits2_jax.data.prep.text_features on its data.list"
            )
        if info["dim"] != dim:
            raise ValueError(
                f"config.data.text_feature_dim={dim} but {path} holds features of width {info['dim']} "
                f"(from {info.get('source')})"
            )
