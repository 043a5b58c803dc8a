"""The evaluator's outputs: a per-utterance TSV, a JSON summary and printed summary lines."""

from __future__ import annotations

import collections
import json
import math
import os

METRICS = ("mcd", "similarity", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "wer")
COLUMNS = ("utt", *METRICS, "hypothesis", "notes")


def summarize(rows: list[dict], skipped: dict[str, int], total: int) -> dict:
    """Mean and count of every metric over the rows where it is finite, plus the skip reasons and their counts."""
    summary: dict = {"utterances": total, "evaluated": len(rows), "skipped": dict(sorted(skipped.items()))}
    missing: collections.Counter = collections.Counter()
    for row in rows:
        missing.update(row.get("notes", []))
    summary["missing"] = dict(sorted(missing.items()))
    summary["metrics"] = {}
    for name in METRICS:
        values = [row[name] for row in rows if isinstance(row.get(name), float) and math.isfinite(row[name])]
        summary["metrics"][name] = {
            "mean": sum(values) / len(values) if values else None,
            "count": len(values),
        }
    return summary


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4f}"
    if isinstance(value, list):
        return ",".join(value)
    return str(value).replace("\t", " ").replace("\n", " ")


def write(out_dir: str, rows: list[dict], summary: dict) -> tuple[str, str]:
    """Writes ``metrics.tsv`` and ``summary.json`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    tsv, js = os.path.join(out_dir, "metrics.tsv"), os.path.join(out_dir, "summary.json")
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(_cell(row.get(c, "")) for c in COLUMNS) + "\n")
    with open(js, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return tsv, js


def summary_lines(summary: dict) -> list[str]:
    """Human-readable lines: one per metric (mean, count), then the skipped and missing files by reason."""
    lines = [f"eval: {summary['evaluated']} of {summary['utterances']} utterances evaluated"]
    for name, stat in summary["metrics"].items():
        mean = "n/a" if stat["mean"] is None else f"{stat['mean']:.3f}"
        lines.append(f"eval: {name:<12} mean {mean:>8}  over {stat['count']} utterances")
    for title in ("skipped", "missing"):
        for reason, n in summary[title].items():
            lines.append(f"eval: {title} {n} x {reason}")
    return lines
