"""CLI: ``python -m sovits2_jax.eval --wav_dir DIR [--wav_dir DIR2 ...] [--out DIR]`` (offline; see
sovits2_jax/eval/__init__.py). Several directories share one load of the models; each gets its own metrics.tsv and
summary.json (``--out`` only with one directory)."""

from __future__ import annotations

import os

from absl import flags

from sovits2_jax import cli

_WAV_DIR = flags.DEFINE_multi_string(
    "wav_dir", None, "directory of {utt}.wav / .txt / .prompt.wav / .ref.wav (repeatable)", required=True
)
_OUT = flags.DEFINE_string("out", None, "where metrics.tsv and summary.json go (default: --wav_dir)")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    from sovits2_jax.eval import evaluate as evaluate_lib
    from sovits2_jax.eval import report
    from sovits2_jax.eval.evaluate import evaluate

    dirs = _WAV_DIR.value
    if _OUT.value and len(dirs) > 1:
        raise cli.Error("--out takes one --wav_dir (several directories each write their own files)")
    for wav_dir in dirs:
        if not os.path.isdir(wav_dir):
            raise cli.Error(f"--wav_dir {wav_dir} is not a directory")
        if not evaluate_lib.find_utterances(wav_dir):
            raise cli.Error(f"--wav_dir {wav_dir} has no utterance to evaluate (no {{utt}}.wav)")
    evaluator = evaluate_lib.Evaluator()
    for wav_dir in dirs:
        out = _OUT.value or wav_dir
        _rows, summary = evaluate(wav_dir, out, evaluator)
        if len(dirs) > 1:
            print(f"eval: {wav_dir}")
        for line in report.summary_lines(summary):
            print(line)
        print(f"eval: wrote {os.path.join(out, 'metrics.tsv')} and {os.path.join(out, 'summary.json')}")
    return 0


if __name__ == "__main__":
    cli.run(main)
