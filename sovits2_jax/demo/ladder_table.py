"""The quality ladder as the report shows it: each stage's scores beside the calibration rows and the aims.

Reads what ``builtin.sh`` leaves in a work directory: the evaluator's ``summary.json`` of ``vocoded/`` (vocoder),
``ladder/resynthesis/`` and ``ladder/resynthesis_gl/`` (resynthesis), ``synthesis/`` (TTS) and
``calibration/<row>/``; ``ladder/ladder.json`` (LM token error and duration, the flow's frame-by-frame mel
distance); the LM trainer's last ``eval_acc`` (teacher-forced token accuracy). A rung that did not run is left out.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SCORES = ("mcd", "similarity", "dnsmos_ovrl", "duration_ratio")
# family -> the rungs in order: (key, label, directory under WORK); gpt_sovits2's vocoder rung is its VITS2 decoder
# from the truth's tokens (it has no separate mel stage)
RUNGS = {
    "cosyvoice2": (
        ("vocoder", "vocoder: the truth's mel -> HiFT", "vocoded"),
        ("resynthesis", "resynthesis: truth tokens + prompt -> flow -> HiFT", "ladder/resynthesis"),
        ("resynthesis_gl", "resynthesis, the flow's mel -> Griffin-Lim", "ladder/resynthesis_gl"),
        ("lm", "LM: sampled tokens against the truth's", None),
        ("tts", "TTS: zero-shot synthesis", "synthesis"),
    ),
    "gpt_sovits2": (
        ("vocoder", "vocoder: truth tokens + text + references -> VITS2", "ladder/resynthesis"),
        ("lm", "AR: sampled tokens against the truth's", None),
        ("tts", "TTS: zero-shot synthesis (AR -> VITS2)", "synthesis"),
    ),
}
LM_PART = {"cosyvoice2": "llm", "gpt_sovits2": "ar"}  # the trainer whose eval_acc is the teacher-forced accuracy
CALIBRATION = (
    ("espeak", "espeak again: same text and voice, another pass"),
    ("griffin_lim", "the truth's mel -> Griffin-Lim"),
    ("other_text", "same voice, another sentence"),
    ("other_voice", "same sentence, another voice"),
    ("noise", "noise at the truth's level"),
)
# the aims of `builtin.sh --size small` (held-out sentences): rung -> metric -> (comparison, value)
AIMS = {
    "vocoder": {"mcd": ("<=", 4.0)},
    "resynthesis": {"mcd": ("<=", 6.0), "similarity": (">=", 0.80)},
    "lm": {"token_error": ("<=", 0.30), "duration_ratio": ("within", 0.15)},
    "tts": {"mcd": ("<=", 7.0), "similarity": (">=", 0.80), "dnsmos_ovrl": (">=", 2.5),
            "duration_ratio": ("within", 0.15)},
}


# the "other" column: (score key, label, digits)
OTHER = (
    ("flow_mel_mcd", "flow mel MCD, frame by frame", 2),
    ("token_error", "token error", 3),
    ("teacher_forced_acc", "teacher-forced accuracy", 3),
)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def duration_ratio(wav_dir: Path) -> float | None:
    """Mean over utterances of len(``utt.wav``) / len(``utt.ref.wav``)."""
    import soundfile

    ratios = []
    for ref in sorted(wav_dir.glob("*.ref.wav")):
        ours = ref.with_name(ref.name[: -len(".ref.wav")] + ".wav")
        if ours.is_file():
            ratios.append(soundfile.info(str(ours)).duration / max(soundfile.info(str(ref)).duration, 1e-9))
    return sum(ratios) / len(ratios) if ratios else None


def _scores(wav_dir: Path) -> dict | None:
    summary = _json(wav_dir / "summary.json")
    if not summary:
        return None
    out = {k: summary["metrics"].get(k, {}).get("mean") for k in ("mcd", "similarity", "dnsmos_ovrl")}
    out["duration_ratio"] = duration_ratio(wav_dir)
    out["count"] = summary["metrics"].get("mcd", {}).get("count", 0)
    return out


def _met(value, op: str, bound: float) -> bool | None:
    if value is None or not math.isfinite(value):
        return None
    if op == "within":
        return abs(value - 1.0) <= bound
    return value <= bound if op == "<=" else value >= bound


def collect(work: str | os.PathLike, training: dict | None = None) -> dict:
    """{"rungs": [...], "calibration": [...]}: each row's label, scores and (rungs) aims with met / not met.
    ``training``: the report's per-part training summaries (the LM's final eval accuracy)."""
    work = Path(work)
    ladder = _json(work / "ladder" / "ladder.json")
    family = ladder.get("family") or _json(work / "synthesis" / "synthesis.json").get("family") or "cosyvoice2"
    rungs = []
    for key, label, folder in RUNGS.get(family, RUNGS["cosyvoice2"]):
        if key == "lm":
            if not ladder:
                continue
            means = ladder["means"]
            scores = dict(token_error=means.get("token_error"), duration_ratio=means.get("duration_ratio"),
                          count=ladder.get("utterances", 0))  # fmt: skip
            acc = (training or {}).get(LM_PART.get(family, "llm"), {}).get("final_eval_acc")
            if acc is not None:
                scores["teacher_forced_acc"] = acc
        else:
            scores = _scores(work / folder)
            if scores is None:
                continue
            if key == "resynthesis" and ladder.get("means", {}).get("flow_mcd") is not None:
                scores["flow_mel_mcd"] = ladder["means"].get("flow_mcd")
        aims = {m: dict(aim=f"{op} {v}", met=_met(scores.get(m), op, v)) for m, (op, v) in AIMS.get(key, {}).items()}
        rungs.append(dict(key=key, label=label, scores=scores, aims=aims))
    calibration = []
    for key, label in CALIBRATION:
        scores = _scores(work / "calibration" / key)
        if scores is not None:
            calibration.append(dict(key=key, label=label, scores=scores))
    return dict(rungs=rungs, calibration=calibration)


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


def markdown(ladder: dict, judged: bool = True) -> list[str]:
    """The ladder table (rungs, then calibration rows) and the aims line per rung (met / not met when ``judged``:
    a run of another size than ``small`` is not held to its aims); [] when nothing ran."""
    if not ladder["rungs"] and not ladder["calibration"]:
        return []
    out = ["## Quality ladder (held-out dev sentences)", "",
           "| row | MCD-DTW dB | similarity | DNSMOS OVRL | duration ratio | other |",
           "|---|---:|---:|---:|---:|---|"]  # fmt: skip

    def line(label, s):
        other = []
        for key, name, digits in OTHER:
            if s.get(key) is not None:
                other.append(f"{name} {_fmt(s[key], digits)}")
        cells = [_fmt(s.get("mcd")), _fmt(s.get("similarity"), 3), _fmt(s.get("dnsmos_ovrl")),
                 _fmt(s.get("duration_ratio")), "; ".join(other)]  # fmt: skip
        return f"| {label} | " + " | ".join(cells) + " |"

    out += [line(f"**{r['label']}**", r["scores"]) for r in ladder["rungs"]]
    out += [line(f"calibration: {c['label']}", c["scores"]) for c in ladder["calibration"]]
    out.append("")
    for r in ladder["rungs"]:
        if r["aims"]:
            verdicts = {True: " (met)", False: " (not met)", None: " (n/a)"}
            parts = [f"{m} {a['aim']}{verdicts[a['met']] if judged else ''}" for m, a in r["aims"].items()]
            out.append(f"- aims of `small`, {r['key']}: " + ", ".join(parts))
    out.append("")
    return out
