"""Console scripts (``[project.scripts]`` in pyproject.toml): each runs one ``python -m`` entry point, so
``sovits2-train --config=...`` is ``python -m sovits2_jax.train --config=...`` with the same flags, ``--help``
and exit status."""

from __future__ import annotations

import runpy

# console script -> the module it runs as __main__
COMMANDS = {
    "sovits2-train": "sovits2_jax.train",
    "sovits2-average": "sovits2_jax.train.average",
    "sovits2-show-config": "sovits2_jax.show_config",
    "sovits2-infer": "sovits2_jax.infer",
    "sovits2-serve": "sovits2_jax.infer.cosyvoice2.server",
    "sovits2-serve-gpt-sovits2": "sovits2_jax.infer.gpt_sovits2.server",
    "sovits2-export": "sovits2_jax.convert.cosyvoice2_export",
    "sovits2-convert": "sovits2_jax.convert",
    "sovits2-parity": "sovits2_jax.parity",
    "sovits2-eval": "sovits2_jax.eval",
}


def _run(module: str) -> None:
    # alter_sys: argv[0] becomes the module's file, as under `python -m` (absl lists that module's flags in --help)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def train() -> None:
    _run(COMMANDS["sovits2-train"])


def average() -> None:
    _run(COMMANDS["sovits2-average"])


def show_config() -> None:
    _run(COMMANDS["sovits2-show-config"])


def infer() -> None:
    _run(COMMANDS["sovits2-infer"])


def serve() -> None:
    _run(COMMANDS["sovits2-serve"])


def serve_gpt_sovits2() -> None:
    _run(COMMANDS["sovits2-serve-gpt-sovits2"])


def export() -> None:
    _run(COMMANDS["sovits2-export"])


def convert() -> None:
    _run(COMMANDS["sovits2-convert"])


def parity() -> None:
    _run(COMMANDS["sovits2-parity"])


def evaluate() -> None:
    _run(COMMANDS["sovits2-eval"])
