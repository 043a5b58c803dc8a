"""Demo synthesis: zero-shot speech for held-out dev sentences, each prompted by other dev utterances of its speaker.

    python -m sovits2_jax.demo.synthesize --model_dir DIR --data_list WORK/data/dev/parquet/data.list \\
        --out_dir DIR [--num N] [--family cosyvoice2|gpt_sovits2] [--references 2] [--batch_size 8] [--seed 0]

Each speaker's dev utterances (sorted by id) are split into two alternating halves; an utterance is prompted by the
first ``--references`` utterances of the other half, so no utterance prompts itself. cosyvoice2 (a CosyVoice2
model directory, ``TTS``): the first of them is the prompt (its transcript + its audio), batched through the
engine. gpt_sovits2 (a directory holding ``ar/`` and ``vits/``): all of them are fused references; texts sharing
references decode in one batch. ``--num`` keeps that many utterances, taken round-robin over the speakers.

Writes the evaluator's layout (``sovits2_jax/eval``): ``{utt}.wav`` (ours), ``{utt}.txt``, ``{utt}.prompt.wav``
(the first prompt utterance) and ``{utt}.ref.wav`` (the utterance's own recording: for the built-in corpus espeak's
rendering of the same text and voice, the ground truth), plus ``pairs.tsv`` and ``synthesis.json`` (counts,
seconds, real-time factor). A request the frontend rejects is skipped and counted with its reason.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import time
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.demo import families as demo_families
from sovits2_jax.demo.pairs import Pair, plan_pairs

FLAGS = flags.FLAGS
COLUMNS = ["utt", "spk", "text", "audio_data", "speech_token"]


def families() -> list[str]:
    """The demo families: the modules of ``sovits2_jax/demo/families/`` (each defines ``synthesize``)."""
    return sorted(m.name for m in pkgutil.iter_modules(demo_families.__path__) if not m.name.startswith("_"))


def family_module(family: str):
    """The module of ``sovits2_jax/demo/families/`` named ``family`` (a one-line error for another name)."""
    if family not in families():
        raise cli.Error(f"--family must be one of {', '.join(families())}, got {family!r}")
    return importlib.import_module(f"{demo_families.__name__}.{family}")


def read_rows(data_list: str) -> dict[str, dict]:
    """utt -> row (utt, spk, text, audio_data, speech_token) of every shard in ``data_list``."""
    import pyarrow.parquet as pq

    from sovits2_jax.data.source import read_data_list

    try:
        files = read_data_list(data_list)
    except (FileNotFoundError, ValueError) as e:
        raise cli.Error(f"--data_list: {e}") from e
    rows = {}
    for path in files:
        try:
            table = pq.read_table(path, columns=COLUMNS)
        except (OSError, KeyError, ValueError) as e:  # pyarrow: a missing column is a KeyError
            raise cli.Error(f"{path} (listed in {data_list}): unreadable ({e})") from e
        for row in table.to_pylist():
            rows[row["utt"]] = row
    return rows


def write_layout(out_dir: str, rows: dict[str, dict], pairs: list[Pair], audio: dict, sample_rate: int) -> list[dict]:
    """The evaluator's files for every synthesised pair and ``pairs.tsv``; returns the pairs.tsv records."""
    from sovits2_jax.audio.io import load_audio, write_wav

    os.makedirs(out_dir, exist_ok=True)
    records = []
    for p in pairs:
        if p.utt not in audio:
            continue
        base = os.path.join(out_dir, p.utt)
        wav = np.asarray(audio[p.utt], np.float32)
        write_wav(f"{base}.wav", wav, sample_rate)
        Path(f"{base}.txt").write_text(rows[p.utt]["text"].strip() + "\n", encoding="utf-8")
        for suffix, utt in ((".prompt.wav", p.prompts[0]), (".ref.wav", p.utt)):
            write_wav(base + suffix, *load_audio(rows[utt]["audio_data"]))  # re-encoded: the source may be FLAC
        records.append(dict(utt=p.utt, speaker=p.speaker, prompts=",".join(p.prompts),
                            seconds=round(len(wav) / sample_rate, 3)))  # fmt: skip
    with open(os.path.join(out_dir, "pairs.tsv"), "w", encoding="utf-8") as f:
        f.write("utt\tspeaker\tprompts\tseconds\n")
        f.writelines(f"{r['utt']}\t{r['speaker']}\t{r['prompts']}\t{r['seconds']}\n" for r in records)
    return records


def run(model_dir, data_list, out_dir, *, family="cosyvoice2", num=0, references=2, batch_size=8, seed=0) -> dict:
    """Plans, synthesises and writes the layout; returns synthesis.json's content (also written to ``out_dir``)."""
    module = family_module(family)
    if batch_size < 1:
        raise cli.Error(f"--batch_size must be >= 1, got {batch_size}")
    rows = read_rows(data_list)
    pairs, alone = plan_pairs(rows, num, references if module.MULTI_REFERENCE else 1)
    if not pairs:
        raise cli.Error(f"{data_list}: no speaker has two utterances to pair (rows: {len(rows)})")
    skips: dict[str, str] = {}
    synth = module.synthesize
    t0 = time.perf_counter()
    audio, sr = synth(model_dir, rows, pairs, batch_size=batch_size, seed=seed, skips=skips)
    seconds = time.perf_counter() - t0
    records = write_layout(out_dir, rows, pairs, audio, sr)
    audio_seconds = sum(r["seconds"] for r in records)
    summary = dict(family=family, model_dir=str(model_dir), data_list=str(data_list), utterances=len(records),
                   planned=len(pairs), skipped=skips, speakers_without_pair=alone, sample_rate=sr,
                   seconds=round(seconds, 2), audio_seconds=round(audio_seconds, 2),
                   rtf=round(seconds / audio_seconds, 3) if audio_seconds else None)  # fmt: skip
    with open(os.path.join(out_dir, "synthesis.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def define_flags() -> None:
    """The command's flags (defined only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "CosyVoice2 model directory, or (gpt_sovits2) a directory with ar/, vits/")
    flags.DEFINE_string("data_list", None, "the dev set's Parquet data.list")
    flags.DEFINE_string("out_dir", None, "where the evaluator's layout is written")
    flags.DEFINE_enum("family", "cosyvoice2", families(), "which system synthesises")
    flags.DEFINE_integer("num", 0, "utterances to synthesise, round-robin over the speakers (0: all)")
    flags.DEFINE_integer("references", 2, "gpt_sovits2: same-speaker references fused per utterance")
    flags.DEFINE_integer("batch_size", 8, "requests per batched synthesis")
    flags.DEFINE_integer("seed", 0, "sampling seed")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    for name in ("model_dir", "data_list", "out_dir"):
        if not getattr(FLAGS, name):
            raise cli.Error(f"give --{name}")
    if not os.path.isdir(FLAGS.model_dir):
        raise cli.Error(f"--model_dir {FLAGS.model_dir} is not a directory")
    from sovits2_jax.convert.mapping import ConversionError
    from sovits2_jax.infer.cosyvoice2.loading import ModelError

    try:
        summary = run(FLAGS.model_dir, FLAGS.data_list, FLAGS.out_dir, family=FLAGS.family, num=FLAGS.num,
                      references=FLAGS.references, batch_size=FLAGS.batch_size, seed=FLAGS.seed)  # fmt: skip
    except (ModelError, ConversionError) as e:
        raise cli.Error(str(e)) from e
    for utt, reason in summary["skipped"].items():
        print(f"synthesize: skipped {utt}: {reason}")
    print(f"synthesize: wrote {summary['utterances']} utterances ({summary['audio_seconds']} s of audio) to "
          f"{FLAGS.out_dir} in {summary['seconds']} s; skipped {len(summary['skipped'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
