"""Offline evaluation of synthesised speech: MCD-DTW, speaker similarity, DNSMOS and WER. Nothing is downloaded.

A directory holds, per utterance ``utt``: ``utt.wav`` (synthesis), ``utt.txt`` (its text), ``utt.prompt.wav``
(the speaker prompt) and, when it exists, ``utt.ref.wav`` (ground truth / reference rendering). An unreadable
synthesis skips the utterance; a missing or unreadable companion file leaves its metric out. Both are counted with
their reason in the summary.
"""

from __future__ import annotations

import collections
import logging
import math
import os

from sovits2_jax.audio.io import AudioError, load_audio
from sovits2_jax.eval import report
from sovits2_jax.eval.asr import Recognizer, word_error_rate
from sovits2_jax.eval.dnsmos import dnsmos_scores
from sovits2_jax.eval.mcd import mcd_dtw
from sovits2_jax.eval.similarity import SpeakerSimilarity

COMPANIONS = (".prompt.wav", ".ref.wav")
log = logging.getLogger(__name__)


def find_utterances(wav_dir: str) -> list[str]:
    """Utterance ids: every ``*.wav`` that is not a ``.prompt.wav`` or ``.ref.wav``, sorted."""
    names = sorted(os.listdir(wav_dir))
    return [n[:-4] for n in names if n.endswith(".wav") and not n.endswith(COMPANIONS)]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _companion(path: str, kind: str, notes: list[str]):
    """(wav, sr) of an optional companion file, or None with the reason appended to ``notes``."""
    if not os.path.exists(path):
        notes.append(f"{kind} missing")
        return None
    try:
        return load_audio(path)
    except AudioError:
        notes.append(f"{kind} unreadable")
        return None


def _guarded(notes: list[str], name: str, fn, *args, default=math.nan):
    """``fn(*args)``, or ``default`` with a note when the metric's library rejects this input (e.g. all-zero audio)."""
    try:
        value = fn(*args)
    except Exception as e:  # third-party metric code raises many types; one bad file must not stop the run
        notes.append(f"{name} failed ({e.__class__.__name__})")
        return default
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{name} not finite")
    return value


class Evaluator:
    """Holds the loaded models (speaker encoder, ASR decoder) across utterances."""

    def __init__(self) -> None:
        self.similarity = SpeakerSimilarity()
        self.recognizer = Recognizer()

    def utterance(self, wav_dir: str, utt: str) -> dict:
        """The metrics of one utterance; raises AudioError when the synthesis itself is unusable."""
        base = os.path.join(wav_dir, utt)
        wav, sr = load_audio(base + ".wav")
        nan = math.nan
        row: dict = {"utt": utt, "mcd": nan, "similarity": nan, "wer": nan, "hypothesis": "", "notes": []}
        notes = row["notes"]
        scores = _guarded(notes, "dnsmos", dnsmos_scores, wav, sr, default={})
        for key in ("sig", "bak", "ovrl"):
            row[f"dnsmos_{key}"] = scores.get(key, nan)
        prompt = _companion(base + ".prompt.wav", "prompt", notes)
        if prompt is not None:
            row["similarity"] = _guarded(notes, "similarity", self.similarity, wav, sr, *prompt)
        if _companion(base + ".ref.wav", "reference", notes) is not None:
            row["mcd"] = _guarded(notes, "mcd", mcd_dtw, base + ".wav", base + ".ref.wav")
        text = _read_text(base + ".txt")
        if text is None:
            notes.append("text missing")
        else:
            hypothesis = _guarded(notes, "asr", self.recognizer, wav, sr, default=None)
            if hypothesis is not None:
                row["hypothesis"] = hypothesis
                row["wer"] = _guarded(notes, "wer", word_error_rate, text, hypothesis)
        return row


def evaluate(wav_dir: str, out_dir: str | None = None, evaluator: Evaluator | None = None) -> tuple[list[dict], dict]:
    """Evaluates every utterance of ``wav_dir``; writes metrics.tsv and summary.json to ``out_dir`` when given.
    ``evaluator``: one already loaded (several directories share its models)."""
    if not os.path.isdir(wav_dir):
        raise FileNotFoundError(f"eval: no such directory {wav_dir}")
    utts = find_utterances(wav_dir)
    evaluator = evaluator or Evaluator()
    rows: list[dict] = []
    skipped: collections.Counter = collections.Counter()
    for utt in utts:
        try:
            rows.append(evaluator.utterance(wav_dir, utt))
        except AudioError as e:
            log.warning("eval: skipping %s: %s", utt, e)
            skipped["synthesis unreadable"] += 1
    summary = report.summarize(rows, dict(skipped), len(utts))
    if out_dir is not None:
        report.write(out_dir, rows, summary)
    return rows, summary
