"""The demo's report from a recipe work directory (``launch/recipes/builtin.sh`` writes what it reads).

    python -m sovits2_jax.demo.report --work WORK [--wav_dir WORK/synthesis] [--size tiny]

Reads ``WORK/stage_times.tsv`` (``name<TAB>seconds[<TAB>parallel]`` per stage), every
``WORK/exp/<part>/metrics.jsonl``, and the synthesis directory's ``synthesis.json`` (sovits2_jax.demo.synthesize),
``summary.json`` and ``metrics.tsv`` (sovits2_jax.eval). Writes ``WORK/report.json`` (stage times, every metric's
mean, each part's final train / eval loss, the issue's quality aims for the small size, paths),
``WORK/plots/curves_<part>.png`` (loss and eval loss vs step), ``WORK/plots/mel_<utt>.png`` for two utterances (our
mel beside the ground truth's) and ``WORK/report.md`` embedding the plots above a per-utterance table. When the dev
utterances speak several languages (``WORK/corpus/dev/utterances.tsv``, else the speakers' languages), the metrics
are also broken down by language. With ``WORK/code_usage.json`` (``sovits2_jax.demo.code_usage``: an ``ssl_grvq``
run's codes) the report also tables each codebook's use and perplexity.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.demo import ladder_table

FLAGS = flags.FLAGS
# the zero-shot synthesis' aims at `small` (the ladder's TTS rung) for the metric table: metric -> (comparison, value)
AIMS = {k: v for k, v in ladder_table.AIMS["tts"].items() if k in ("mcd", "similarity", "dnsmos_ovrl")}
TABLE = ("mcd", "similarity", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "wer")
MEL_PLOTS = 2


def _stage_rows(path: Path) -> dict[str, tuple[float, bool]]:
    """name -> (seconds, ran in parallel with the other parallel stages) from ``name<TAB>seconds[<TAB>parallel]``
    lines in file order (a stage run twice keeps its last time)."""
    rows: dict[str, tuple[float, bool]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, rest = line.partition("\t")
            seconds, _, mark = rest.partition("\t")
            if name and seconds:
                rows[name] = (float(seconds), mark.strip() == "parallel")
    return rows


def read_stage_times(path: Path) -> dict[str, float]:
    """name -> seconds in file order (a stage run twice keeps its last time)."""
    return {name: seconds for name, (seconds, _) in _stage_rows(path).items()}


def wall_seconds(path: Path) -> float:
    """The stages' wall time: sequential stages add up, parallel ones (started together) count their longest."""
    rows = _stage_rows(path).values()
    return sum(s for s, par in rows if not par) + max((s for s, par in rows if par), default=0.0)


def read_curves(metrics_jsonl: Path) -> dict[str, dict[int, float]]:
    """{"loss": {step: value}, "eval_loss": {step: value}, "eval_acc": ...} from a trainer's metrics.jsonl; a step
    logged again (a resumed run) keeps its last."""
    from sovits2_jax.train.metrics import read_metrics

    names = {"loss": "train/loss", "eval_loss": "eval/loss", "eval_acc": "eval/acc"}
    curves: dict[str, dict[int, float]] = {name: {} for name in names}
    for record in read_metrics(metrics_jsonl):
        for name, key in names.items():
            if isinstance(record.get(key), (int, float)):
                curves[name][int(record["step"])] = float(record[key])
    return {name: dict(sorted(curve.items())) for name, curve in curves.items()}


def _last(curve: dict[int, float]) -> float | None:
    return curve[max(curve)] if curve else None


def training_summary(curves: dict[str, dict[int, float]]) -> dict:
    """Steps, first and final train loss, final eval loss of one part."""
    loss, ev = curves["loss"], curves["eval_loss"]
    return dict(steps=max(loss) if loss else 0, first_loss=loss[min(loss)] if loss else None, final_loss=_last(loss),
                final_eval_loss=_last(ev), final_eval_acc=_last(curves.get("eval_acc", {})))  # fmt: skip


def read_table(path: Path) -> list[dict]:
    """The evaluator's metrics.tsv rows with the metric columns as floats (nan where absent)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        for name in TABLE:
            try:
                row[name] = float(row.get(name) or "nan")
            except ValueError:
                row[name] = math.nan
    return rows


def utterance_languages(corpus_split: Path) -> dict[str, str]:
    """utt -> its languages (``en``, ``en+fr``) from a corpus split's ``utterances.tsv``, else its speaker's
    language from ``speakers.tsv``; {} when neither exists."""
    from sovits2_jax.data.prep.corpus import read_speakers, read_utterances

    index = read_utterances(str(corpus_split / "utterances.tsv"))
    if index:
        return {utt: langs for utt, (langs, _) in index.items()}
    if not (corpus_split / "speakers.tsv").is_file():
        return {}
    speakers = read_speakers(str(corpus_split / "speakers.tsv"))
    return {f"{spk}_": s.language for spk, s in speakers.items()}  # prefix: LibriTTS ids start with the speaker


def by_language(rows: list[dict], languages: dict[str, str]) -> dict[str, dict]:
    """language -> {metric: mean over its utterances, "count": n} of the evaluator's rows (an utterance's language
    looked up by id, or by its speaker prefix); {} when every row has one language."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        utt = row["utt"]
        lang = languages.get(utt) or next((v for k, v in languages.items() if k.endswith("_") and
                                           utt.startswith(k)), None)  # fmt: skip
        if lang is not None:
            groups.setdefault(lang, []).append(row)
    if len(groups) < 2:
        return {}
    out = {}
    for lang in sorted(groups):
        group = groups[lang]
        means = {m: [r[m] for r in group if math.isfinite(r[m])] for m in TABLE}
        out[lang] = {m: (sum(v) / len(v) if v else None) for m, v in means.items()} | {"count": len(group)}
    return out


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _aims(metrics: dict) -> dict:
    out = {}
    for name, (op, value) in AIMS.items():
        mean = metrics.get(name)
        met = None if mean is None else (mean <= value if op == "<=" else mean >= value)
        out[name] = dict(aim=f"{op} {value}", mean=mean, met=met)
    return out


# ------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(part: str, curves: dict[str, dict[int, float]], path: Path) -> Path:
    """Train loss (line) and eval loss (markers) against step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curves["loss"]:
        ax.plot(list(curves["loss"]), list(curves["loss"].values()), ".-", label="train loss")
    if curves["eval_loss"]:
        ax.plot(list(curves["eval_loss"]), list(curves["eval_loss"].values()), "o-", label="eval loss (dev)")
    ax.set(xlabel="step", ylabel="loss", title=f"{part}")
    if curves.get("eval_acc"):
        acc = ax.twinx()
        acc.plot(list(curves["eval_acc"]), list(curves["eval_acc"].values()), "s--", color="tab:green",
                 label="eval token accuracy (teacher-forced)")  # fmt: skip
        acc.set(ylabel="accuracy", ylim=(0, 1))
        acc.legend(loc="center right")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_mel(wav_path: Path) -> np.ndarray:
    """CosyVoice2's 24 kHz log-mel [frames, 80] of a wav file (resampled to 24 kHz first)."""
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np

    cfg = MelConfig()
    wav, _ = load_audio(str(wav_path), target_sr=cfg.sampling_rate)
    return mel_spectrogram_np(np.asarray(wav, np.float32), cfg)


def plot_mels(utt: str, ours: Path, truth: Path, path: Path, text: str = "") -> Path:
    """Our log-mel beside the ground truth's, on one colour scale and one time axis (a longer one is wider)."""
    from sovits2_jax.audio.mel import MelConfig

    plt = _pyplot()
    a, b = log_mel(ours), log_mel(truth)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    rate = MelConfig().sampling_rate / MelConfig().hop_size
    widths = [max(len(a), 1), max(len(b), 1)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, gridspec_kw={"width_ratios": widths})
    fig.subplots_adjust(top=0.8, bottom=0.15, wspace=0.08)
    for ax, mel, title in ((axes[0], a, "ours"), (axes[1], b, "ground truth (espeak)")):
        image = ax.imshow(mel.T, origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax.set(title=f"{title}: {mel.shape[0] / rate:.2f} s", xlabel=f"frame ({rate:g} per s)")
    axes[0].set_ylabel("mel bin")
    fig.colorbar(image, ax=axes, fraction=0.03, label="log mel")
    fig.suptitle(f"{utt}: {text[:90]}", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ report


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict, rows: list[dict], wav_dir: Path, work: Path) -> str:
    """report.md: stage times, metric means against the aims, training, the plots, the per-utterance table."""

    def rel(path) -> str:
        return os.path.relpath(path, work)

    out = [f"# Demo report: {report['family']} ({report['size'] or 'release'} size)", ""]
    out += ["## Stage times", "", "| stage | seconds |", "|---|---:|"]
    parallel = set(report.get("parallel_stages", ()))
    out += [f"| {name}{' (in parallel)' * (name in parallel)} | {s:.1f} |" for name, s in report["stage_times"].items()]
    out += [f"| **total** | **{report['total_seconds']:.1f}** |", ""]
    syn = report["synthesis"]
    vocoded = report.get("vocoder_check") or {}
    alone_head, alone_rule = (" vocoder alone |", "---:|") if vocoded else ("", "")
    out += ["## Metrics (held-out dev sentences, zero-shot)", "",
            f"{syn.get('utterances', 0)} utterances synthesised in {_fmt(syn.get('seconds'), 1)} s "
            f"(real-time factor {_fmt(syn.get('rtf'))}, compilation included).", "",
            f"| metric | mean | count |{alone_head} aim of `small` |", f"|---|---:|---:|{alone_rule}---|"]  # fmt: skip
    judged = report.get("size") == "small"  # another size is not held to small's aims
    for name, stat in report["metrics"].items():
        aim = report["aims"].get(name)
        verdict = f" ({'met' if aim and aim['met'] else 'not met'})" if judged else ""
        note = "" if aim is None else f"{aim['aim']}{verdict}"
        alone = f" {_fmt(vocoded.get(name, {}).get('mean'))} |" if vocoded else ""
        out.append(f"| {name} | {_fmt(stat['mean'])} | {stat['count']} |{alone} {note} |")
    if vocoded:
        out += ["", "*vocoder alone*: each ground truth's own mel through the trained HiFT (`WORK/vocoded`, "
                "`python -m sovits2_jax.demo.vocode`), the ceiling this vocoder sets for the system."]  # fmt: skip
    out.append("")
    if report.get("by_language"):
        head = "| languages | utterances | " + " | ".join(TABLE) + " |"
        out += ["## By language", "", "Utterances grouped by the languages they speak (`en+fr`: switches from en to fr "
                "inside the utterance); no language id is among the model's inputs.", "",
                head, "|---|---:|" + "---:|" * len(TABLE)]  # fmt: skip
        for lang, stat in report["by_language"].items():
            out.append(f"| {lang} | {stat['count']} | " + " | ".join(_fmt(stat[m]) for m in TABLE) + " |")
        out.append("")
    out += ladder_table.markdown(report.get("ladder") or {"rungs": [], "calibration": []}, judged=judged)
    if not (report.get("ladder") or {}).get("calibration"):
        out += ["This run has no quality ladder: `launch/recipes/builtin.sh --size small` trains for speech and "
                "adds it (see docs/results.md).", ""]  # fmt: skip
    usage = report.get("code_usage") or {}
    if usage:
        out += ["## Code usage", "", f"The grouped VQ's codes over {usage['utterances']} utterances "
                f"({usage['frames']} frames, `{usage['column']}`), {usage['codebook_size']} codes per codebook.", "",
                "| codebook | used | usage | perplexity |", "|---|---:|---:|---:|"]  # fmt: skip
        for k, u in enumerate(usage["codebooks"]):
            out.append(f"| {k} | {int(u['used'])} | {_fmt(u['usage'])} | {_fmt(u['perplexity'], 1)} |")
        out.append("")
    out += ["## Training", "", "| part | steps | first loss | final loss | final eval loss |",
            "|---|---:|---:|---:|---:|"]  # fmt: skip
    for part, t in report["training"].items():
        out.append(f"| {part} | {t['steps']} | {_fmt(t['first_loss'])} | {_fmt(t['final_loss'])} | "
                   f"{_fmt(t['final_eval_loss'])} |")  # fmt: skip
    out.append("")
    for part, png in report["plots"]["curves"].items():
        out += [f"![{part} training curve]({rel(png)})", ""]
    out += ["## Ours beside the ground truth", ""]
    for utt, png in report["plots"]["mels"].items():
        out += [f"![{utt} mel]({rel(png)})", ""]
    out += ["## Per utterance", "", "| utt | text | ours | prompt | " + " | ".join(TABLE) + " |",
            "|---|---|---|---|" + "---:|" * len(TABLE)]  # fmt: skip
    for row in rows:
        utt = row["utt"]
        text = _text(wav_dir / f"{utt}.txt")
        cells = [utt, text.replace("|", "/"), f"[wav]({rel(wav_dir / f'{utt}.wav')})",
                 f"[wav]({rel(wav_dir / f'{utt}.prompt.wav')})", *(_fmt(row[m]) for m in TABLE)]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "WER is pocketsphinx's (en-us) reading: it does not read espeak's speech, so expect it near 1 on",
            "the built-in corpus even for espeak itself.", ""]  # fmt: skip
    return "\n".join(out)


def build(work: str | os.PathLike, wav_dir: str | os.PathLike | None = None, size: str = "") -> dict:
    """Writes report.json, report.md and the plots into ``work``; returns report.json's content."""
    t0 = time.perf_counter()
    work = Path(work)
    wav_dir = Path(wav_dir) if wav_dir else work / "synthesis"
    summary = _json(wav_dir / "summary.json")
    if not summary:
        raise cli.Error(f"{wav_dir / 'summary.json'} not found: run python -m sovits2_jax.eval --wav_dir {wav_dir}")
    synthesis = _json(wav_dir / "synthesis.json")
    plots = work / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    training, curve_pngs = {}, {}
    for metrics in sorted((work / "exp").glob("*/metrics.jsonl")):
        part = metrics.parent.name
        curves = read_curves(metrics)
        training[part] = training_summary(curves)
        curve_pngs[part] = str(plot_curves(part, curves, plots / f"curves_{part}.png"))
    rows = read_table(wav_dir / "metrics.tsv")
    mel_pngs = {}
    for row in rows[:MEL_PLOTS]:
        utt = row["utt"]
        if (wav_dir / f"{utt}.ref.wav").is_file():
            text = _text(wav_dir / f"{utt}.txt")
            png = plot_mels(utt, wav_dir / f"{utt}.wav", wav_dir / f"{utt}.ref.wav", plots / f"mel_{utt}.png", text)
            mel_pngs[utt] = str(png)
            resynthesis = work / "ladder" / "resynthesis" / f"{utt}.wav"
            if resynthesis.is_file():
                png = plot_mels(utt, resynthesis, wav_dir / f"{utt}.ref.wav", plots / f"mel_resynthesis_{utt}.png",
                                f"resynthesis (the truth's tokens): {text}")  # fmt: skip
                mel_pngs[f"{utt} resynthesis"] = str(png)
    stage_times = read_stage_times(work / "stage_times.tsv")
    stage_times["report"] = round(time.perf_counter() - t0, 2)
    metrics = {name: dict(stat) for name, stat in summary["metrics"].items()}
    vocoded = _json(work / "vocoded" / "summary.json")
    report = dict(
        family=synthesis.get("family", ""),
        size=size,
        stage_times=stage_times,
        total_seconds=round(wall_seconds(work / "stage_times.tsv") + stage_times["report"], 2),
        parallel_stages=[n for n, (_, par) in _stage_rows(work / "stage_times.tsv").items() if par],
        metrics=metrics,
        by_language=by_language(rows, utterance_languages(work / "corpus" / "dev")),
        aims=_aims({k: v["mean"] for k, v in metrics.items()}),
        vocoder_check={name: dict(stat) for name, stat in vocoded.get("metrics", {}).items()},
        evaluation={k: summary[k] for k in ("utterances", "evaluated", "skipped", "missing")},
        synthesis=synthesis,
        training=training,
        ladder=ladder_table.collect(work, training),
        code_usage=_json(work / "code_usage.json"),
        plots=dict(curves=curve_pngs, mels=mel_pngs),
        paths=dict(
            work=str(work), wav_dir=str(wav_dir), metrics_tsv=str(wav_dir / "metrics.tsv"),
            report_md=str(work / "report.md"), model_dir=synthesis.get("model_dir", ""),
        ),
    )  # fmt: skip
    (work / "report.md").write_text(markdown(report, rows, wav_dir, work), encoding="utf-8")
    with open(work / "report.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return report


def define_flags() -> None:
    """The command's flags (defined only when run as a program)."""
    flags.DEFINE_string("work", None, "the recipe's work directory (stage_times.tsv, exp/<part>/metrics.jsonl)")
    flags.DEFINE_string("wav_dir", None, "the synthesised + evaluated directory (default: WORK/synthesis)")
    flags.DEFINE_string("size", "", "the recipe size, for the title")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    if not FLAGS.work or not os.path.isdir(FLAGS.work):
        raise cli.Error(f"--work {FLAGS.work} is not a directory")
    report = build(FLAGS.work, FLAGS.wav_dir, FLAGS.size)
    for name, stat in report["metrics"].items():
        print(f"report: {name:<12} {_fmt(stat['mean'])}")
    for part, t in report["training"].items():
        print(f"report: {part:<5} {t['steps']} steps, loss {_fmt(t['first_loss'])} -> {_fmt(t['final_loss'])}, "
              f"eval loss {_fmt(t['final_eval_loss'])}")  # fmt: skip
    for k, u in enumerate((report["code_usage"] or {}).get("codebooks", [])):
        print(f"report: codebook {k} used {int(u['used'])} codes ({_fmt(u['usage'])}), perplexity "
              f"{_fmt(u['perplexity'], 1)}")  # fmt: skip
    print(f"report: wrote {report['paths']['report_md']} and {os.path.join(FLAGS.work, 'report.json')}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
