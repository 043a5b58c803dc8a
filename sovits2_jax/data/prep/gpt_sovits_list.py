"""GPT-SoVITS list files: one ``wav_path|speaker|language|text`` line per utterance, as its webui and
``1-get-text.py`` read them.

Relative wav paths are relative to the list file's folder; with ``wav_dir`` only each path's file name is kept and
looked up in ``wav_dir`` (GPT-SoVITS's "audio folder" option, also for lists written on another machine, Windows
paths included). Language codes are GPT-SoVITS's, in any case (ZH, JP/JA, EN, KO, YUE) and become zh, ja, en, ko,
yue. Utterance ids are the wav's file name without extension, prefixed with the speaker (``SPK_NAME``) unless it
already starts with it, whitespace turned into ``_``, and suffixed ``-2``, ``-3``... when two different files would
get the same id; entries come back sorted by id, as Kaldi's files must be. Unusable lines (wrong field count, empty
speaker or text, unknown language, missing audio, whitespace in the path, a repeated wav) are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import os
import re

from sovits2_jax.data.prep.skiplog import SkipLog

# GPT-SoVITS's language_v1_to_language_v2 table, compared case-insensitively.
LANGUAGES = {"zh": "zh", "jp": "ja", "ja": "ja", "en": "en", "ko": "ko", "yue": "yue"}


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One usable line of a list file."""

    utt: str
    wav: str
    speaker: str
    language: str
    text: str


def _kaldi_token(s: str) -> str:
    return re.sub(r"\s+", "_", s.strip())


def _resolve_wav(field: str, list_dir: str, wav_dir: str | None) -> str:
    if wav_dir is not None:
        return os.path.abspath(os.path.join(wav_dir, re.split(r"[\\/]", field)[-1]))
    return os.path.abspath(os.path.join(list_dir, os.path.expanduser(field)))


def _parse(line: str, list_dir: str, wav_dir: str | None) -> tuple[tuple[str, str, str, str] | None, str]:
    """((wav, speaker, language, text), "") or (None, reason to skip)."""
    fields = line.split("|")
    if len(fields) != 4:
        return None, f"wrong field count: {len(fields)} fields, expected wav|speaker|language|text"
    wav_field, speaker, language, text = (x.strip() for x in fields)
    text = " ".join(text.split())
    if not text:
        return None, "empty text"
    if not speaker:
        return None, "empty speaker"
    if language.lower() not in LANGUAGES:
        return None, f"unknown language: {language!r} (known: {', '.join(sorted(LANGUAGES))})"
    if not wav_field:
        return None, "missing audio: empty wav path"
    wav = _resolve_wav(wav_field, list_dir, wav_dir)
    if not os.path.isfile(wav):
        return None, f"missing audio: {wav}"
    if re.search(r"\s", wav):
        return None, f"wav path with whitespace (wav.scp cannot hold it): {wav}"
    return (wav, _kaldi_token(speaker), LANGUAGES[language.lower()], text), ""


def read_list(path: str, skips: SkipLog, wav_dir: str | None = None) -> list[ListEntry]:
    """The usable entries of the list file ``path`` sorted by utterance id; skipped lines go to ``skips``
    (as ``path:line``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"kaldi: list file {path} does not exist")
    list_dir = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"kaldi: list file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    entries: list[ListEntry] = []
    seen_wavs: set[str] = set()
    taken: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parsed, reason = _parse(line, list_dir, wav_dir)
        if parsed is None:
            skips.add(f"{path}:{n}", reason)
            continue
        wav, speaker, language, text = parsed
        if wav in seen_wavs:
            skips.add(f"{path}:{n}", f"repeated wav: {wav}")
            continue
        seen_wavs.add(wav)
        stem = _kaldi_token(os.path.splitext(os.path.basename(wav))[0])
        utt = base = stem if stem == speaker or stem.startswith(speaker + "_") else f"{speaker}_{stem}"
        k = 1
        while utt in taken:
            k += 1
            utt = f"{base}-{k}"
        taken.add(utt)
        entries.append(ListEntry(utt, wav, speaker, language, text))
    return sorted(entries, key=lambda e: e.utt)
