"""A text encoder directory: GPT-SoVITS2's BGE-M3 (or a random-init stand-in of its architecture) with its tokenizer.

A directory is a text encoder when ``parts.load(DIR, "xlm_roberta")`` reads it (a HF XLM-RoBERTa directory, BGE-M3
as published, or our Orbax checkpoint of one, ``sovits2-convert``'s output) and it holds the tokenizer files
(``tokenizer.json`` or ``sentencepiece.bpe.model``) itself or in ``extra/``, where the converter keeps them. ``save``
writes the Orbax kind, so ``sovits2-convert --src DIR --dst HF_DIR`` turns it into a HF directory.

The data preparation (``data/prep/text_features.py``), the ``gpt_sovits2_ar`` family's validation and GPT-SoVITS2
inference all read directories through this module: a transcript's ids and its features always come from one
tokenizer and one encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import hf_xlm_roberta
from sovits2_jax.convert.mapping import ConversionError, flatten, unflatten
from sovits2_jax.convert.params import params_from_flat, params_to_flat
from sovits2_jax.models import xlm_roberta
from sovits2_jax.models.xlm_roberta import XLMRobertaConfig, XLMRobertaModel
from sovits2_jax.text.bge_m3_tokenizer import SENTENCEPIECE_MODEL, TOKENIZER_JSON, BgeM3Tokenizer

EXTRA = "extra"  # where our checkpoints keep the source's other files (the tokenizer among them)


def tokenizer_dir(path: str | Path) -> Path:
    """The directory holding the tokenizer files: ``path`` itself or ``path/extra``."""
    path = Path(path)
    for d in (path, path / EXTRA):
        if (d / TOKENIZER_JSON).is_file() or (d / SENTENCEPIECE_MODEL).is_file():
            return d
    raise FileNotFoundError(
        f"{path}: no text encoder tokenizer ({TOKENIZER_JSON} or {SENTENCEPIECE_MODEL}) in it or in {path / EXTRA}"
    )


def encoder_config(path: str | Path) -> XLMRobertaConfig:
    """The encoder's architecture, read from config.json or meta.json (no weights)."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path}: no such directory")
    if ckpt.meta_path(path) is not None:
        meta = ckpt.read_meta(path)
        if meta.get("format") != hf_xlm_roberta.NAME:
            raise ConversionError(f"{path}: a checkpoint of format {meta.get('format')!r}, not a text encoder")
        return XLMRobertaConfig.from_dict(meta["config"])
    if hf_xlm_roberta.detect(path):
        try:
            return XLMRobertaConfig.from_hf(hf_xlm_roberta.read_hf_config(path))
        except (ValueError, KeyError) as e:
            raise ConversionError(f"{path / 'config.json'}: unsupported XLM-RoBERTa config ({e})") from e
    raise ConversionError(f"{path}: not a text encoder ({hf_xlm_roberta.DESCRIPTION}, or our checkpoint of one)")


def _check_vocabulary(path: Path, tokenizer: BgeM3Tokenizer, config: XLMRobertaConfig) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise ConversionError(
            f"{path}: the tokenizer gives {tokenizer.vocab_size} ids but the encoder embeds only {config.vocab_size}"
        )


def sizes(path: str | Path) -> tuple[int, int]:
    """(ids the tokenizer gives, feature width) of a text encoder directory, read without its weights: the AR's
    text vocabulary and ``text_feature_dim``."""
    path = Path(path)
    config = encoder_config(path)
    tokenizer = BgeM3Tokenizer.from_directory(tokenizer_dir(path))
    _check_vocabulary(path, tokenizer, config)
    return tokenizer.vocab_size, config.hidden_size


@dataclasses.dataclass
class TextEncoder:
    """A loaded text encoder directory: the encoder, its tokenizer and the directory."""

    model: XLMRobertaModel
    tokenizer: BgeM3Tokenizer
    source: Path

    @property
    def config(self) -> XLMRobertaConfig:
        return self.model.config

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def max_tokens(self) -> int:
        """The longest id row (``<s>`` and ``</s>`` included) the encoder's positions and ``encode``'s buckets hold."""
        return min(self.config.max_tokens, max(xlm_roberta.BUCKETS))

    def tokenize(self, text: str) -> list[int]:
        """``<s>`` + the text's ids + ``</s>`` (not truncated: check ``max_tokens``)."""
        return self.tokenizer.encode(text)

    def features(self, rows: Sequence[Sequence[int]], *, batch_size: int = 16) -> list[np.ndarray]:
        """The last hidden state of each id row, float32 [len(row), hidden] (``xlm_roberta.encode``: jitted, in
        length buckets)."""
        return xlm_roberta.encode(self.model, rows, batch_size=batch_size)

    def fingerprint(self) -> str:
        """A digest of the tokenizer file, the architecture and every weight: equal exactly for the same pair."""
        h = hashlib.blake2b(digest_size=16)
        h.update(Path(self.tokenizer.source).read_bytes())
        arch = {k: v for k, v in self.config.to_dict().items() if k not in ("dtype", "attention_impl")}
        h.update(json.dumps(arch, sort_keys=True).encode())
        for key, value in sorted(params_to_flat(nnx.state(self.model, nnx.Param)).items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(value, np.float32).tobytes())
        return h.hexdigest()


def load(path: str | Path, *, dtype: str = "float32") -> TextEncoder:
    """The encoder (computing in ``dtype``) and tokenizer of a text encoder directory."""
    from sovits2_jax.convert import parts

    path = Path(path)
    params, config = parts.load(path, hf_xlm_roberta.PART)
    config = dataclasses.replace(config, dtype=dtype)
    tokenizer = BgeM3Tokenizer.from_directory(tokenizer_dir(path))
    _check_vocabulary(path, tokenizer, config)
    graphdef, state = params_from_flat(lambda: XLMRobertaModel(config, rngs=nnx.Rngs(0)), flatten(params))
    return TextEncoder(nnx.merge(graphdef, state), tokenizer, path)


def save(dst: str | Path, model: XLMRobertaModel, tokenizer_files: Mapping[str, bytes]) -> Path:
    """Writes ``model`` as our Orbax checkpoint (format ``hf_xlm_roberta``) with ``tokenizer_files`` ({file name:
    bytes}, e.g. ``sentencepiece.bpe.model``) in ``extra/``, atomically; returns ``dst``."""
    params = unflatten(params_to_flat(nnx.state(model, nnx.Param)))
    tmp = ckpt.staging_dir(dst)
    try:
        ckpt.write_checkpoint(tmp, params, hf_xlm_roberta.checkpoint_meta(model.config))
        (tmp / EXTRA).mkdir()
        for name, data in tokenizer_files.items():
            (tmp / EXTRA / name).write_bytes(data)
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)


def is_text_encoder(path: str | Path) -> bool:
    """Whether ``path`` looks like a text encoder directory (an encoder config and a tokenizer file)."""
    try:
        encoder_config(path)
        tokenizer_dir(path)
    except (ConversionError, FileNotFoundError, OSError, ValueError):
        return False
    return True
