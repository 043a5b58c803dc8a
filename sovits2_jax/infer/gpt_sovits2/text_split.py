"""Splitting a text into the fragments GPT-SoVITS synthesises one by one, by the names its API takes as
``text_split_method``: ``cut0`` (no split), ``cut1`` (groups of four sentences), ``cut2`` (fragments of about 50
characters, at punctuation or spaces), ``cut3`` (at the Chinese full stop), ``cut4`` (at English full stops that
are not decimal points), ``cut5`` (at every punctuation mark, the default)."""

from __future__ import annotations

import re

METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
_SENTENCE_END = "。！？!?.…"
_PUNCTUATION = ",.;?!、，。？！；：:…"


def _after(text: str, marks: str) -> list[str]:
    """``text`` cut after each run of ``marks`` (the marks stay with the fragment they end); a full stop between
    two digits is a decimal point, not a cut."""
    out, current = [], ""
    for i, ch in enumerate(text):
        current += ch
        following = text[i + 1] if i + 1 < len(text) else ""
        decimal = ch == "." and i > 0 and text[i - 1].isdigit() and following.isdigit()
        if ch in marks and not decimal and following not in marks:
            out.append(current)
            current = ""
    return [*out, current] if current else out


def _english_periods(text: str) -> list[str]:
    return re.split(r"(?<=\.)(?!\d)", text)


def _about(text: str, size: int) -> list[str]:
    """Fragments of at least ``size`` characters, each ending at punctuation or a space where there is one."""
    out, current = [], ""
    for piece in re.findall(rf"[^{re.escape(_PUNCTUATION)}\s]+[{re.escape(_PUNCTUATION)}\s]*|\S+|\s+", text):
        current += piece
        if len(current) >= size:
            out.append(current)
            current = ""
    return [*out, current] if current else out


def split(text: str, method: str = "cut5") -> list[str]:
    """The non-empty fragments of ``text`` (stripped); ValueError for an unknown method."""
    if method not in METHODS:
        raise ValueError(f"text_split_method: {method} is not supported (one of {', '.join(METHODS)})")
    if method == "cut0":
        pieces = [text]
    elif method == "cut1":
        sentences = _after(text, _SENTENCE_END)
        pieces = ["".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    elif method == "cut2":
        pieces = _about(text, 50)
    elif method == "cut3":
        pieces = _after(text, "。")
    elif method == "cut4":
        pieces = _english_periods(text)
    else:
        pieces = _after(text, _PUNCTUATION)
    fragments = [p.strip() for p in pieces]
    # a fragment of punctuation alone joins the one before it, or goes (nothing to say on its own)
    merged: list[str] = []
    for f in fragments:
        if re.search(r"\w", f):
            merged.append(f)
        elif f and merged:
            merged[-1] += f
    return merged
