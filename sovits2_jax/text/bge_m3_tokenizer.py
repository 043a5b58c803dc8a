"""BGE-M3's own tokenizer (XLM-RoBERTa sentencepiece, 250002 ids), read from a model directory; no hub access.

GPT-SoVITS2 takes a transcript's ids and its BGE-M3 features from this one tokenizer, so the ids must be the ones
HF's ``XLMRobertaTokenizer`` gives: ``<s>`` (0), the text's pieces, ``</s>`` (2). A directory is read through
``tokenizer.json`` with the ``tokenizers`` library when it has one, else through ``sentencepiece.bpe.model`` with
``sentencepiece`` and fairseq's id layout: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, then sentencepiece
piece ``i`` at ``i + 1`` (its own ``<unk>`` at 3) and ``<mask>`` last. In both, the special tokens written in the
text are tokens, not characters (``<mask>`` also takes the whitespace before it), as in HF.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "sentencepiece.bpe.model"
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
FAIRSEQ_IDS = {BOS: 0, PAD: 1, EOS: 2, UNK: 3}
FAIRSEQ_OFFSET = 1  # sentencepiece id -> fairseq id, apart from the four above
# HF's added tokens, longest first so that "</s>" is not read as "<s>"; "<mask>" takes the whitespace before it
_SPECIAL_IN_TEXT = re.compile(r"\s*<mask>|</s>|<pad>|<unk>|<s>")


class _TokenizersJson:
    """Pieces through a ``tokenizer.json`` (the fast tokenizer HF and sentence-transformers run)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()  # the caller's max_length decides
        self.tokenizer.no_padding()
        missing = [t for t in (BOS, PAD, EOS) if self.tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)} token: not an XLM-RoBERTa tokenizer")

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def pieces(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids


class _SentencePiece:
    """Pieces through ``sentencepiece.bpe.model`` with fairseq's ids (as HF's XLMRobertaTokenizer lays them out)."""

    def __init__(self, path: Path):
        import sentencepiece

        self.model = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.ids = {**FAIRSEQ_IDS, MASK: self.model.get_piece_size() + FAIRSEQ_OFFSET}

    def token_id(self, token: str) -> int:
        return self.ids[token]

    def vocab_size(self) -> int:
        return self.model.get_piece_size() + FAIRSEQ_OFFSET + 1  # + <mask>

    def _segment(self, text: str) -> list[int]:
        unk = self.model.unk_id()
        return [FAIRSEQ_IDS[UNK] if i == unk else i + FAIRSEQ_OFFSET for i in self.model.encode(text)]

    def pieces(self, text: str) -> list[int]:
        out, start = [], 0
        for m in _SPECIAL_IN_TEXT.finditer(text):
            out += self._segment(text[start : m.start()])
            out.append(self.ids[m.group().lstrip()])
            start = m.end()
        return out + self._segment(text[start:])


class BgeM3Tokenizer:
    """Text -> BGE-M3 ids with ``<s>`` ... ``</s>`` (``from_directory``)."""

    def __init__(self, backend: _TokenizersJson | _SentencePiece, source: Path):
        self._backend = backend
        self.source = source
        self.bos_id, self.eos_id, self.pad_id = (backend.token_id(t) for t in (BOS, EOS, PAD))
        self.vocab_size = backend.vocab_size()

    @classmethod
    def from_directory(cls, directory: str | Path) -> BgeM3Tokenizer:
        """The tokenizer of a BGE-M3 (XLM-RoBERTa) directory: its ``tokenizer.json``, else its
        ``sentencepiece.bpe.model``; a FileNotFoundError naming both paths when it has neither."""
        directory = Path(directory)
        if (directory / TOKENIZER_JSON).is_file():
            return cls(_TokenizersJson(directory / TOKENIZER_JSON), directory / TOKENIZER_JSON)
        if (directory / SENTENCEPIECE_MODEL).is_file():
            return cls(_SentencePiece(directory / SENTENCEPIECE_MODEL), directory / SENTENCEPIECE_MODEL)
        raise FileNotFoundError(
            f"no BGE-M3 tokenizer in {directory}: neither {directory / TOKENIZER_JSON} nor "
            f"{directory / SENTENCEPIECE_MODEL} exists"
        )

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """``<s>`` + the text's ids + ``</s>``; with ``max_length`` (>= 2) the text's ids are cut so that the whole
        row fits, as HF's truncation does."""
        ids = self._backend.pieces(text)
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length={max_length} leaves no room for <s> and </s>")
            ids = ids[: max_length - 2]
        return [self.bos_id, *ids, self.eos_id]

    def encode_batch(self, texts: Iterable[str], max_length: int | None = None) -> list[list[int]]:
        """``encode`` of each text."""
        return [self.encode(t, max_length) for t in texts]
