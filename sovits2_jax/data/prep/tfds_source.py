"""TFDS's LibriTTS as a source: writes the LibriTTS layout that the rest of data prep reads.

    python -m sovits2_jax.data.prep.tfds_source --out DIR --splits train_clean100,dev_clean [--data_dir TFDS_DIR]

Needs the ``tfds`` extra (tensorflow-datasets, and tensorflow for its Audio feature). The dataset must already be
prepared in ``--data_dir`` (nothing is downloaded). Split ``train_clean100`` goes to ``DIR/train-clean-100``;
each example becomes ``SPEAKER/CHAPTER/UTT.wav`` (24 kHz, 16-bit) with ``.normalized.txt`` / ``.original.txt``.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.io import write_wav

SAMPLE_RATE = 24000
SPLIT_DIRS = {
    "train_clean100": "train-clean-100", "train_clean360": "train-clean-360", "train_other500": "train-other-500",
    "dev_clean": "dev-clean", "dev_other": "dev-other", "test_clean": "test-clean", "test_other": "test-other",
}  # fmt: skip

log = logging.getLogger(__name__)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def utterance_id(example: dict) -> tuple[str, str, str]:
    """(speaker, chapter, utt) with the utterance id starting ``SPEAKER_CHAPTER_`` as LibriTTS ids do."""
    spk, chapter = str(int(example["speaker_id"])), str(int(example["chapter_id"]))
    raw = re.sub(r"[^0-9A-Za-z_-]", "-", _text(example["id"]))
    prefix = f"{spk}_{chapter}_"
    return spk, chapter, raw if raw.startswith(prefix) else prefix + raw


def write_example(out_dir: str, example: dict) -> str:
    spk, chapter, utt = utterance_id(example)
    base = os.path.join(out_dir, spk, chapter, utt)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    speech = np.asarray(example["speech"])
    if speech.ndim != 1:
        speech = speech.reshape(-1)
    wav = speech.astype(np.float32) / 32768.0 if np.issubdtype(speech.dtype, np.integer) else speech.astype(np.float32)
    write_wav(base + ".wav", wav, SAMPLE_RATE)
    for suffix, key in ((".normalized.txt", "text_normalized"), (".original.txt", "text_original")):
        with open(base + suffix, "w", encoding="utf-8") as f:
            f.write(_text(example[key]))
    return utt


def export_libritts(
    out_dir: str, splits: list[str], *, data_dir: str | None = None, max_examples: int | None = None
) -> dict[str, int]:
    """Write the given TFDS LibriTTS splits under ``out_dir``; returns examples written per split."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise ImportError("tfds source: install the tfds extra (pip install 'sovits2-jax[tfds]')") from exc
    unknown = [s for s in splits if s not in SPLIT_DIRS]
    if unknown:
        raise ValueError(f"tfds source: unknown LibriTTS splits {unknown}; have {sorted(SPLIT_DIRS)}")
    counts = {}
    for split in splits:
        ds = tfds.load("libritts", split=split, data_dir=data_dir, download=False)
        target = os.path.join(out_dir, SPLIT_DIRS[split])
        n = 0
        for example in tqdm(tfds.as_numpy(ds), desc=split, unit="utt", disable=None, dynamic_ncols=True):
            write_example(target, example)
            n += 1
            if max_examples is not None and n >= max_examples:
                break
        counts[split] = n
        log.info("tfds source: %d utterances of %s -> %s", n, split, target)
    return counts


def main(argv: list[str]) -> None:
    """CLI: TFDS LibriTTS ``--splits`` written to ``--out`` in the LibriTTS layout."""
    cli.command(argv)
    f = flags.FLAGS
    counts = export_libritts(f.out, [s.strip() for s in f.splits.split(",") if s.strip()], data_dir=f.data_dir,
                             max_examples=f.max_examples)  # fmt: skip
    print("tfds source: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {f.out}")


if __name__ == "__main__":
    flags.DEFINE_string("out", None, "output directory (LibriTTS layout)", required=True)
    flags.DEFINE_string("splits", "train_clean100,dev_clean", "comma-separated TFDS splits")
    flags.DEFINE_string("data_dir", None, "TFDS data dir holding the prepared libritts dataset")
    flags.DEFINE_integer("max_examples", None, "at most this many examples per split")
    cli.run_logged(main)
