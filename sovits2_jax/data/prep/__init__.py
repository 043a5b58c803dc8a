"""Offline preparation: built-in corpus, LibriTTS download, Kaldi files (from a LibriTTS tree or a GPT-SoVITS list),
ONNX extractors, offline models, Parquet writer, TFDS source.

Each CLI (``python -m sovits2_jax.data.prep.<module>``) is an absl app: flags defined under ``__main__``,
``main(argv)`` reading ``absl.flags.FLAGS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


def command(argv: list[str], choices: tuple[str, ...] = ()) -> str:
    """The one positional argument of a CLI, from ``choices`` (none allowed when ``choices`` is empty)."""
    from absl import app

    args = argv[1:]
    if not choices:
        if args:
            raise app.UsageError(f"unexpected arguments {args}")
        return ""
    if len(args) != 1 or args[0] not in choices:
        raise app.UsageError(f"give one of {', '.join(choices)} as the first argument (got {args})")
    return args[0]


def run(main: Callable[[list[str]], None]) -> None:
    """``main`` under absl, logging INFO to stderr; bad input the user can fix ends as one ``error:`` line."""
    from sovits2_jax import cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cli.run(main)
