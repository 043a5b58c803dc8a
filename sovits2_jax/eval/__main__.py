"""CLI: ``python -m sovits2_jax.eval --wav_dir DIR [--out DIR]`` (offline; see sovits2_jax/eval/__init__.py)."""

from __future__ import annotations

import os

from absl import flags

from sovits2_jax import cli

_WAV_DIR = flags.DEFINE_string("wav_dir", None, "directory of {utt}.wav / .txt / .prompt.wav / .ref.wav", required=True)
_OUT = flags.DEFINE_string("out", None, "where metrics.tsv and summary.json go (default: --wav_dir)")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    from sovits2_jax.eval import evaluate as evaluate_lib
    from sovits2_jax.eval import report
    from sovits2_jax.eval.evaluate import evaluate

    if not os.path.isdir(_WAV_DIR.value):
        raise cli.Error(f"--wav_dir {_WAV_DIR.value} is not a directory")
    if not evaluate_lib.find_utterances(_WAV_DIR.value):
        raise cli.Error(f"--wav_dir {_WAV_DIR.value} has no utterance to evaluate (no {{utt}}.wav)")
    out = _OUT.value or _WAV_DIR.value
    _rows, summary = evaluate(_WAV_DIR.value, out)
    for line in report.summary_lines(summary):
        print(line)
    print(f"eval: wrote {os.path.join(out, 'metrics.tsv')} and {os.path.join(out, 'summary.json')}")
    return 0


if __name__ == "__main__":
    cli.run(main)
