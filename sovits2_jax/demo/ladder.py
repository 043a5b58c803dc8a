"""The quality ladder's middle rungs: the decoder from the truth's speech tokens, and the LM alone.

    python -m sovits2_jax.demo.ladder --model_dir DIR --data_list WORK/data/dev/parquet/data.list \\
        --wav_dir WORK/synthesis --out_dir WORK/ladder [--family F] [--seed 0] [--batch_size 8]

For every pair of the synthesis directory (its ``pairs.tsv``: utterance, prompt utterances), the family's module
(``sovits2_jax/demo/families/<family>.py``: ``ladder``) renders the utterance from its own speech tokens (the
tokenizer is deterministic, so these are the tokens the LM was trained to produce) with the synthesis's prompts,
and samples the LM for the zero-shot request as the synthesis does:

- cosyvoice2: *resynthesis* (tokens + the prompt through the flow and HiFT, ``vc`` mode) ->
  ``out_dir/resynthesis/{utt}.wav``; the flow's mel against the utterance's mel frame by frame (no time warping:
  ``sovits2_jax.eval.mel_distance``) and that mel through Griffin-Lim -> ``out_dir/resynthesis_gl/{utt}.wav``, so
  the flow's progress is audible while the vocoder lags;
- gpt_sovits2: the VITS2 decoder from the tokens, the text and the fused references ->
  ``out_dir/resynthesis/{utt}.wav`` (its vocoder rung);
- both: the LM's sampled tokens against the utterance's own: token error rate (edit distance / reference length)
  and duration ratio (sampled / reference tokens).

Writes ``out_dir/ladder.json`` (family, means and per utterance). Every wav directory is in the evaluator's layout
(``python -m sovits2_jax.eval --wav_dir ...``). Teacher-forced token accuracy is the LM trainer's ``eval_acc``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time

import numpy as np
from absl import flags

from sovits2_jax import cli

SUFFIXES = (".txt", ".prompt.wav", ".ref.wav")


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences."""
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def token_scores(sampled, reference) -> dict[str, float]:
    """Token error rate and duration ratio of sampled speech tokens against the reference's."""
    n = max(len(reference), 1)
    return dict(token_error=edit_distance(sampled, reference) / n, duration_ratio=len(sampled) / n)


def read_pairs(wav_dir: str) -> list[tuple[str, tuple[str, ...]]]:
    """(utt, its prompt utts) of ``pairs.tsv``."""
    path = os.path.join(wav_dir, "pairs.tsv")
    if not os.path.isfile(path):
        raise cli.Error(f"{path} not found: run python -m sovits2_jax.demo.synthesize first")
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["utt"], tuple(r["prompts"].split(","))) for r in csv.DictReader(f, delimiter="\t")]


def synthesis_family(wav_dir: str) -> str:
    """The family ``demo.synthesize`` recorded in ``wav_dir/synthesis.json`` (cosyvoice2 when absent)."""
    path = os.path.join(wav_dir, "synthesis.json")
    if not os.path.isfile(path):
        return "cosyvoice2"
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("family") or "cosyvoice2"


def _copy_companions(wav_dir: str, folder: str, utt: str) -> None:
    for suffix in SUFFIXES:
        src = os.path.join(wav_dir, utt + suffix)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(folder, utt + suffix))


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def run(model_dir, data_list, wav_dir, out_dir, *, family=None, seed: int = 0, batch_size: int = 8) -> dict:
    """Writes the family's rungs (one evaluator layout per folder) and ladder.json; returns ladder.json's content.
    ``family``: the synthesis directory's (``synthesis.json``) unless given."""
    from sovits2_jax.audio.io import write_wav
    from sovits2_jax.demo.synthesize import family_module, read_rows

    family = family or synthesis_family(wav_dir)
    module = family_module(family)
    if not hasattr(module, "ladder"):
        raise cli.Error(f"family {family} has no ladder rungs (sovits2_jax/demo/families/{family}.py: ladder)")
    pairs = read_pairs(wav_dir)
    rows = read_rows(data_list)
    missing = sorted({u for utt, prompts in pairs for u in (utt, *prompts) if u not in rows})
    if missing:
        raise cli.Error(f"{data_list} lacks utterances of {wav_dir}/pairs.tsv: {', '.join(missing[:3])}")
    t0, records, skipped = time.perf_counter(), [], {}
    for utt, record, audio in module.ladder(model_dir, rows, pairs, seed=seed, batch_size=batch_size, skips=skipped):
        record["tokens_match_data"] = bool(record.get("tokens_match_data", True))
        records.append(dict(utt=utt, **record))
        for name, (wav, sr) in audio.items():
            folder = os.path.join(out_dir, name)
            os.makedirs(folder, exist_ok=True)
            write_wav(os.path.join(folder, f"{utt}.wav"), np.asarray(wav, np.float32), sr)
            _copy_companions(wav_dir, folder, utt)
        if len(records) % batch_size == 0 or len(records) == len(pairs):
            print(f"ladder: {len(records)} of {len(pairs)} utterances", flush=True)
    keys = ("token_error", "duration_ratio", "flow_mcd", "flow_l1", "flow_length_ratio")
    info = dict(family=family, model_dir=str(model_dir), utterances=len(records), skipped=skipped,
                seconds=round(time.perf_counter() - t0, 2), means={k: _mean(records, k) for k in keys},
                tokens_match_data=all(r["tokens_match_data"] for r in records), rows=records)  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "ladder.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def define_flags() -> None:
    """The command's flags (defined only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "the synthesis's model directory (CosyVoice2, or GPT-SoVITS2's ar/ + vits/)")
    flags.DEFINE_string("family", None, "the demo family (default: the synthesis directory's synthesis.json)")
    flags.DEFINE_string("data_list", None, "the dev set's Parquet data.list (texts, audio, speech tokens)")
    flags.DEFINE_string("wav_dir", None, "the synthesis directory (its pairs.tsv and companions)")
    flags.DEFINE_string("out_dir", None, "where resynthesis/, resynthesis_gl/ and ladder.json go")
    flags.DEFINE_integer("seed", 0, "sampling seed (the synthesis's)")
    flags.DEFINE_integer("batch_size", 8, "requests per engine call")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    F = flags.FLAGS
    for name in ("model_dir", "data_list", "wav_dir", "out_dir"):
        if not getattr(F, name):
            raise cli.Error(f"give --{name}")
    from sovits2_jax.convert.mapping import ConversionError
    from sovits2_jax.infer.cosyvoice2.loading import ModelError

    try:
        info = run(F.model_dir, F.data_list, F.wav_dir, F.out_dir, family=F.family, seed=F.seed,
                   batch_size=F.batch_size)  # fmt: skip
    except (ModelError, ConversionError, FileNotFoundError) as e:
        raise cli.Error(str(e)) from e
    m = {k: "n/a" if v is None else f"{v:.3f}" for k, v in info["means"].items()}
    flow = f"; flow mel (frame by frame) MCD {m['flow_mcd']} dB, L1 {m['flow_l1']}" if m["flow_mcd"] != "n/a" else ""
    print(f"ladder ({info['family']}): token error {m['token_error']}, duration ratio {m['duration_ratio']}{flow} "
          f"over {info['utterances']} utterances; skipped {len(info['skipped'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
