"""Calibration rows for the quality ladder: where each metric sits between noise and the truth on this corpus.

    python -m sovits2_jax.demo.calibration --wav_dir WORK/synthesis --speakers WORK/corpus/dev/speakers.tsv \\
        --out_dir WORK/calibration [--num 16]

For every utterance of a synthesis directory (``{utt}.ref.wav`` the ground truth, ``{utt}.txt`` its text,
``{utt}.prompt.wav`` another utterance of its speaker) each row writes a stand-in for our synthesis as
``out_dir/<row>/{utt}.wav`` beside copies of the companions, in the evaluator's layout:

- ``espeak``: espeak-ng reading the same text in the same voice at a rate 15 words/minute higher (the corpus's
  second pass): a perfect system with its own timing;
- ``other_voice``: the same text in the next speaker's voice (the similarity of a wrong voice);
- ``other_text``: espeak reading another dev sentence in the same voice (MCD-DTW across texts; the similarity of
  the right voice, measured on other audio than the prompt);
- ``noise``: Gaussian noise at the truth's length and RMS;
- ``griffin_lim``: the truth's own full-band 24 kHz mel (the vocoder's loss mel: 80 bins, hop 480, no fmax)
  through Griffin-Lim (an untrained vocoder: what a trained one must beat).

An utterance that switches language (the corpus's ``utterances.tsv`` beside ``--speakers``) switches in each
re-rendered row too. ``python -m sovits2_jax.eval --wav_dir out_dir/<row>`` scores each; the report prints them
under the ladder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli

ROWS = ("espeak", "other_voice", "other_text", "noise", "griffin_lim")
SUFFIXES = (".txt", ".prompt.wav", ".ref.wav")
RATE_OFFSET = 15  # the corpus's second pass through its sentences


def ground_truth_utts(wav_dir: str, num: int = 0) -> list[str]:
    """Utterances with a ``.ref.wav``, ``.txt`` and ``.prompt.wav``, sorted; ``num`` > 0 keeps the first ``num``."""
    utts = sorted(n[: -len(".ref.wav")] for n in os.listdir(wav_dir) if n.endswith(".ref.wav"))
    utts = [u for u in utts if all(os.path.isfile(os.path.join(wav_dir, u + s)) for s in SUFFIXES)]
    return utts[:num] if num > 0 else utts


def _speaker_of(utt: str) -> str:
    return utt.split("_", 1)[0]  # LibriTTS naming: speaker_chapter_...


def stand_ins(
    wav_dir: str, utts: list[str], speakers: dict, seed: int = 0, segments: dict | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """row -> utt -> 24 kHz float32 audio for the rows of ``ROWS``; ``segments``: utt -> its language segments
    (the corpus's ``utterances.tsv``), so an utterance that switches language is re-rendered switching too."""
    from sovits2_jax.audio.griffin_lim import log_mel_to_audio
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
    from sovits2_jax.data.prep.corpus import Job, render

    cfg = MelConfig(fmax=None)  # full band: a mel cut at 8 kHz would score the missing top band, not the vocoder
    ids = sorted(speakers)
    texts = [Path(os.path.join(wav_dir, u + ".txt")).read_text(encoding="utf-8").strip() for u in utts]
    rows: dict[str, dict[str, np.ndarray]] = {name: {} for name in ROWS}
    jobs: list[tuple[str, str, Job]] = []
    rng = np.random.default_rng(seed)
    for utt in utts:
        base = os.path.join(wav_dir, utt)
        truth, _ = load_audio(base + ".ref.wav", target_sr=cfg.sampling_rate)
        truth = np.asarray(truth, np.float32)
        text = Path(base + ".txt").read_text(encoding="utf-8").strip()
        spk = speakers.get(_speaker_of(utt))
        if spk is not None:
            other = speakers[ids[(ids.index(spk.id) + 1) % len(ids)]]
            faster = dataclasses.replace(spk, rate=spk.rate + RATE_OFFSET)
            i = texts.index(text)
            j = next((k % len(texts) for k in range(i + 1, i + 1 + len(texts)) if texts[k % len(texts)] != text), None)
            another = "A different sentence." if j is None else texts[j]
            own, theirs = (segments or {}).get(utt, ()), () if j is None else (segments or {}).get(utts[j], ())
            jobs += [("espeak", utt, Job(utt, utt, text, faster, own)),
                     ("other_voice", utt, Job(utt, utt, text, other, own)),
                     ("other_text", utt, Job(utt, utt, another, spk, theirs))]  # fmt: skip
        rms = float(np.sqrt(np.mean(truth**2))) or 1e-3
        rows["noise"][utt] = (rng.standard_normal(len(truth)) * rms).astype(np.float32)
        rows["griffin_lim"][utt] = log_mel_to_audio(mel_spectrogram_np(truth, cfg), cfg)
    if jobs:
        for (row, utt, _), wav in zip(jobs, render([job for _, _, job in jobs])):
            rows[row][utt] = wav
    return rows


def write_rows(wav_dir: str, out_dir: str, rows: dict[str, dict[str, np.ndarray]], sample_rate: int) -> dict:
    """Each row's layout under ``out_dir/<row>``; returns {row: utterances written}."""
    from sovits2_jax.audio.io import write_wav

    counts = {}
    for row, audio in rows.items():
        folder = os.path.join(out_dir, row)
        os.makedirs(folder, exist_ok=True)
        for utt, wav in audio.items():
            write_wav(os.path.join(folder, f"{utt}.wav"), wav, sample_rate)
            for suffix in SUFFIXES:
                shutil.copyfile(os.path.join(wav_dir, utt + suffix), os.path.join(folder, utt + suffix))
        counts[row] = len(audio)
    return counts


def run(wav_dir: str, speakers_tsv: str, out_dir: str, num: int = 0, seed: int = 0) -> dict:
    """Writes every row's layout and ``out_dir/calibration.json``; returns its content."""
    from sovits2_jax.audio.mel import MelConfig
    from sovits2_jax.data.prep.corpus import read_speakers, read_utterances

    if not os.path.isdir(wav_dir):
        raise cli.Error(f"--wav_dir {wav_dir} is not a directory")
    try:
        speakers = read_speakers(speakers_tsv)
    except (OSError, ValueError, IndexError) as e:
        raise cli.Error(f"--speakers {speakers_tsv}: unreadable speakers.tsv ({e})") from e
    utts = ground_truth_utts(wav_dir, num)
    if not utts:
        raise cli.Error(f"--wav_dir {wav_dir} holds no utterance with .ref.wav, .txt and .prompt.wav")
    t0 = time.perf_counter()
    index = read_utterances(os.path.join(os.path.dirname(speakers_tsv), "utterances.tsv"))
    segments = {utt: segs for utt, (_, segs) in index.items()}
    rows = stand_ins(wav_dir, utts, speakers, seed, segments)
    counts = write_rows(wav_dir, out_dir, rows, MelConfig().sampling_rate)
    info = dict(rows=counts, utterances=len(utts), seconds=round(time.perf_counter() - t0, 2))
    with open(os.path.join(out_dir, "calibration.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def define_flags() -> None:
    """The command's flags (defined only when run as a program)."""
    flags.DEFINE_string("wav_dir", None, "a synthesis directory ({utt}.ref.wav, .txt, .prompt.wav)")
    flags.DEFINE_string("speakers", None, "the corpus split's speakers.tsv (voices, rates, pitches)")
    flags.DEFINE_string("out_dir", None, "where the rows' layouts go")
    flags.DEFINE_integer("num", 0, "utterances per row (0: all)")
    flags.DEFINE_integer("seed", 0, "noise seed")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    for name in ("wav_dir", "speakers", "out_dir"):
        if not getattr(flags.FLAGS, name):
            raise cli.Error(f"give --{name}")
    F = flags.FLAGS
    info = run(F.wav_dir, F.speakers, F.out_dir, F.num, F.seed)
    print(f"calibration: {info['utterances']} utterances x rows {', '.join(info['rows'])} -> {F.out_dir} "
          f"in {info['seconds']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
