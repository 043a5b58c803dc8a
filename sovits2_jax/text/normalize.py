"""Text normalisation (wetext's en / zh / ja FSTs) and CosyVoice's paragraph splitting.

``normalize_and_split(text, tokenize)`` is what CosyVoice2's frontend does with ttsfrd absent: normalise with the
language's TN grammar, apply its Chinese clean-ups, split the text into sentences at the language's punctuation
and greedily merge them into segments of about 60-80 units (characters for zh / ja, LM tokens otherwise), then
drop segments that are only punctuation. Special tokens (``[laughter]``, ``<strong>``, ``<|endofprompt|>``...)
are never fed to the grammars: the text between them is normalised piece by piece. Unlike CosyVoice, a segment
that is still too long (a text without sentence punctuation) is cut at commas, then at spaces, then anywhere, so
a long text is split, never truncated.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence

import regex

log = logging.getLogger(__name__)

TOKEN_MAX_N = 80
TOKEN_MIN_N = 60
MERGE_LEN = 20
HARD_MAX_FACTOR = 2  # a segment longer than this many times TOKEN_MAX_N is cut further

_HAN = re.compile(r"[\u4e00-\u9fff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_ONLY_PUNCT = regex.compile(r"[\p{P}\p{S}\s]*")
SENTENCE_END = {"zh": "。？！；：、.?!;", "en": ".?!;:"}
CLOSING_QUOTES = '"”'
COMMAS = "，,、"


def detect_language(text: str) -> str:
    """``ja`` when the text has kana, ``zh`` when it has Han characters (CosyVoice's test), else ``en``."""
    if _KANA.search(text):
        return "ja"
    return "zh" if _HAN.search(text) else "en"


@functools.lru_cache(maxsize=4)
def _normalizer(lang: str):
    from wetext import Normalizer

    # CosyVoice's settings for WeTextProcessing's zh normaliser: keep erhua, keep full-width characters
    return Normalizer(lang=lang, operator="tn", remove_erhua=False, full_to_half=False)


def wetext_normalize(text: str, lang: str) -> str:
    """wetext's text normalisation of ``text`` (no special tokens in it) with the ``lang`` grammar."""
    core = text.strip()
    if not core:
        return text
    try:
        out = _normalizer(lang).normalize(core)
    except RuntimeError as e:  # no path through the grammar: keep the text as written
        log.warning("wetext could not normalise %r (%s); keeping it as is", core[:40], e)
        out = core
    # the blanks around a piece cut out between special tokens stay (wetext strips them)
    return text[: len(text) - len(text.lstrip())] + out + text[len(text.rstrip()) :]


def _protected(text: str, specials: Sequence[str]) -> list[tuple[str, bool]]:
    """(piece, is_special) in order; special tokens are cut out longest first."""
    if not specials:
        return [(text, False)]
    pattern = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")
    return [(p, i % 2 == 1) for i, p in enumerate(pattern.split(text)) if p]


def _zh_cleanup(text: str) -> str:
    """CosyVoice's rules after the zh grammar: no newlines, blanks only between ASCII words, ² ³ spelled, '.' as
    '。', ' - ' as '，', brackets removed, trailing commas made a full stop."""
    text = text.replace("\n", "")
    text = "".join(
        c for i, c in enumerate(text)
        if c != " " or (0 < i < len(text) - 1 and _ascii_word(text[i - 1]) and _ascii_word(text[i + 1]))
    )  # fmt: skip
    text = text.replace("²", "平方").replace("³", "立方").replace(".", "。").replace(" - ", "，")
    for c in ("（", "）", "【", "】", "`"):
        text = text.replace(c, "")
    text = text.replace("——", " ")
    return re.sub(r"[，,、]+$", "。", text)


def _ascii_word(c: str) -> bool:
    return c.isascii() and c != " "


def normalize(text: str, lang: str | None = None, specials: Sequence[str] = ()) -> str:
    """The normalised text (the languages' grammars between the special tokens, then zh clean-ups)."""
    text = text.strip()
    if not text:
        return ""
    lang = lang or detect_language(text)
    out = [p if special else wetext_normalize(p, lang) for p, special in _protected(text, specials)]
    text = "".join(out)
    return _zh_cleanup(text) if lang == "zh" else text


def _sentences(text: str, lang: str) -> list[str]:
    """Cut after every sentence-ending mark (a closing quote right after it stays with the sentence)."""
    ends = SENTENCE_END["en" if lang == "en" else "zh"]
    if text[-1] not in ends:
        text += "." if lang == "en" else "。"
    out, start, i = [], 0, 0
    while i < len(text):
        if text[i] in ends:
            stop = i + 2 if i + 1 < len(text) and text[i + 1] in CLOSING_QUOTES else i + 1
            if i > start:
                out.append(text[start:stop])
            start, i = stop, stop
            continue
        i += 1
    if start < len(text) and text[start:].strip():
        out.append(text[start:])
    return out


def _cut_long(segment: str, measure: Callable[[str], int], limit: int) -> list[str]:
    """Cuts a segment over ``limit`` at commas, then spaces, then characters, each part within the limit."""
    if measure(segment) <= limit:
        return [segment]
    for sep in (COMMAS, " "):
        parts = [p for p in re.split(f"(?<=[{re.escape(sep)}])", segment) if p]
        if len(parts) > 1:
            out, cur = [], ""
            for p in parts:
                if cur and measure(cur + p) > limit:
                    out.append(cur)
                    cur = ""
                cur += p
            out.append(cur)
            return [q for part in out for q in _cut_long(part, measure, limit)]
    # no separator left: halve (characters; measured in tokens for en, so this terminates on any string)
    mid = len(segment) // 2
    return _cut_long(segment[:mid], measure, limit) + _cut_long(segment[mid:], measure, limit)


def split_paragraph(
    text: str,
    tokenize: Callable[[str], list[int]],
    lang: str,
    token_max_n: int = TOKEN_MAX_N,
    token_min_n: int = TOKEN_MIN_N,
    merge_len: int = MERGE_LEN,
) -> list[str]:
    """CosyVoice's merge rule over sentences: close the running segment when adding the next sentence would pass
    ``token_max_n`` and it already has more than ``token_min_n``; a last segment under ``merge_len`` joins the one
    before. Lengths are characters for zh / ja and ``tokenize``'s token count otherwise."""
    if not text:
        return []
    measure = len if lang != "en" else (lambda s: len(tokenize(s)))
    segments, cur = [], ""
    for sentence in _sentences(text, lang):
        if measure(cur + sentence) > token_max_n and measure(cur) > token_min_n:
            segments.append(cur)
            cur = ""
        cur += sentence
    if cur:
        if segments and measure(cur) < merge_len:
            segments[-1] += cur
        else:
            segments.append(cur)
    limit = HARD_MAX_FACTOR * token_max_n
    return [part for seg in segments for part in _cut_long(seg, measure, limit)]


def is_only_punctuation(text: str) -> bool:
    """True for text made only of punctuation, symbols and blanks (nothing to say)."""
    return bool(_ONLY_PUNCT.fullmatch(text))


def normalize_and_split(
    text: str, tokenize: Callable[[str], list[int]], specials: Sequence[str] = (), lang: str | None = None
) -> list[str]:
    """The segments to synthesise one after another (empty for an empty or punctuation-only text)."""
    text = text.strip()
    if not text:
        return []
    lang = lang or detect_language(text)
    segments = split_paragraph(normalize(text, lang, specials), tokenize, lang)
    return [s for s in segments if not is_only_punctuation(s)]
