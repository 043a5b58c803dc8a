"""Kaldi-style data files (wav.scp, text, utt2spk, spk2utt) from a LibriTTS-layout directory or a GPT-SoVITS
list file.

    python -m sovits2_jax.data.prep.kaldi --src_dir CORPUS/train-clean-100 --des_dir data/train-clean-100
    python -m sovits2_jax.data.prep.kaldi --list voices.list [--wav_dir DIR] --des_dir data/train

Like CosyVoice's LibriTTS ``prepare_data.py``: audio ``SPEAKER/CHAPTER/UTT.wav`` with its ``UTT.normalized.txt``;
the speaker is the part of the utterance id before the first underscore. Unusable inputs (missing, empty or
unreadable transcript; corrupt or zero-length audio; speaker folders without audio) are skipped, counted and listed
in ``DES/skipped_kaldi.tsv``. A list file (``wav|speaker|language|text`` lines, see ``gpt_sovits_list``) gives the
same four files plus ``utt2lang``; its unusable lines and audio are skipped and listed the same way.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os

from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.io import AudioError, audio_info
from sovits2_jax.data.prep import gpt_sovits_list
from sovits2_jax.data.prep.skiplog import SkipLog

log = logging.getLogger(__name__)


@dataclasses.dataclass
class KaldiData:
    """The four Kaldi maps (insertion order = utterance order)."""

    utt2wav: dict[str, str]
    utt2text: dict[str, str]
    utt2spk: dict[str, str]
    utt2lang: dict[str, str] | None = None  # from list files, which name each utterance's language

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt, spk in self.utt2spk.items():
            out.setdefault(spk, []).append(utt)
        return out

    def __len__(self) -> int:
        return len(self.utt2wav)


def scan_libritts(src_dir: str, skips: SkipLog | None = None) -> KaldiData:
    """Read a LibriTTS-layout directory; utterances sorted by id."""
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"kaldi: source directory {src_dir} does not exist")
    skips = skips if skips is not None else SkipLog("kaldi")
    src_dir = os.path.abspath(src_dir)
    wavs = sorted(glob.glob(os.path.join(src_dir, "*", "*", "*.wav")))
    speaker_dirs = sorted(d for d in glob.glob(os.path.join(src_dir, "*")) if os.path.isdir(d))
    with_audio = {os.path.dirname(os.path.dirname(w)) for w in wavs}
    for d in speaker_dirs:
        if d not in with_audio:
            skips.add(d, "speaker folder without audio")
    data = KaldiData({}, {}, {})
    for wav in tqdm(sorted(wavs, key=os.path.basename), desc="kaldi", unit="utt", disable=None, dynamic_ncols=True):
        utt = os.path.basename(wav)[: -len(".wav")]
        text, reason = _check_utterance(wav)
        if reason:
            skips.add(utt, reason)
            continue
        data.utt2wav[utt] = wav
        data.utt2text[utt] = text
        data.utt2spk[utt] = utt.split("_")[0]
    if not data.utt2wav:
        raise ValueError(f"kaldi: no usable utterances under {src_dir} (expected SPEAKER/CHAPTER/*.wav)")
    return data


def _check_utterance(wav: str) -> tuple[str, str | None]:
    """(transcript, None) or ("", reason to skip)."""
    txt = wav[: -len(".wav")] + ".normalized.txt"
    if not os.path.exists(txt):
        return "", "missing transcript: no " + os.path.basename(txt)
    try:
        with open(txt, encoding="utf-8") as f:
            text = " ".join(f.read().split())
    except (OSError, UnicodeDecodeError) as exc:
        return "", f"unreadable transcript: {exc.__class__.__name__}"
    if not text:
        return "", "empty transcript"
    return text, _audio_problem(wav)


def _audio_problem(wav: str) -> str | None:
    """Why ``wav`` is unusable, or None."""
    if os.path.getsize(wav) == 0:
        return "zero-length audio file"
    try:
        audio_info(wav)
    except AudioError as exc:
        return "corrupt audio: " + str(exc).split(": ", 1)[-1]
    return None


def scan_list(list_path: str, skips: SkipLog | None = None, wav_dir: str | None = None) -> KaldiData:
    """Read a GPT-SoVITS list file; utterances sorted by id, with their languages in ``utt2lang``."""
    skips = skips if skips is not None else SkipLog("kaldi")
    data = KaldiData({}, {}, {}, {})
    for e in gpt_sovits_list.read_list(list_path, skips, wav_dir):
        reason = _audio_problem(e.wav)
        if reason:
            skips.add(e.utt, reason)
            continue
        data.utt2wav[e.utt], data.utt2text[e.utt], data.utt2spk[e.utt] = e.wav, e.text, e.speaker
        data.utt2lang[e.utt] = e.language
    if not data.utt2wav:
        raise ValueError(f"kaldi: no usable lines in {list_path} (expected wav_path|speaker|language|text); "
                         + skips.summary())  # fmt: skip
    return data


def write_kaldi_dir(data: KaldiData, des_dir: str) -> None:
    """wav.scp, text, utt2spk, spk2utt (each written to a temporary name, then renamed)."""
    os.makedirs(des_dir, exist_ok=True)
    files = {
        "wav.scp": [f"{u} {w}" for u, w in data.utt2wav.items()],
        "text": [f"{u} {t}" for u, t in data.utt2text.items()],
        "utt2spk": [f"{u} {s}" for u, s in data.utt2spk.items()],
        "spk2utt": [f"{s} {' '.join(us)}" for s, us in data.spk2utt.items()],
    }
    if data.utt2lang is not None:
        files["utt2lang"] = [f"{u} {lang}" for u, lang in data.utt2lang.items()]
    for name, lines in files.items():
        if any(" " in w for w in data.utt2wav.values()) and name == "wav.scp":
            raise ValueError(f"kaldi: wav paths with spaces cannot go in wav.scp ({des_dir})")
        tmp = os.path.join(des_dir, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(tmp, os.path.join(des_dir, name))


def read_kaldi_dir(des_dir: str) -> KaldiData:
    """Read wav.scp, text and utt2spk back (order of wav.scp)."""

    def read(name: str) -> dict[str, str]:
        path = os.path.join(des_dir, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"kaldi: {path} is missing (run stage 0 first)")
        out = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition(" ")
                if key:
                    out[key] = value
        return out

    utt2wav, utt2text, utt2spk = read("wav.scp"), read("text"), read("utt2spk")
    for name, table in (("text", utt2text), ("utt2spk", utt2spk)):
        missing = [u for u in utt2wav if u not in table]
        if missing:
            raise ValueError(f"kaldi: {len(missing)} utterances of wav.scp missing from {name}, e.g. {missing[0]}")
    return KaldiData(utt2wav, {u: utt2text[u] for u in utt2wav}, {u: utt2spk[u] for u in utt2wav})


def prepare(src_dir: str, des_dir: str, wav_dir: str | None = None) -> tuple[KaldiData, SkipLog]:
    """Kaldi files in ``des_dir`` from a LibriTTS-layout directory or, when ``src_dir`` is a file (or ends in
    ``.list``), a GPT-SoVITS list file (``wav_dir``: where its wavs are, by file name)."""
    skips = SkipLog("kaldi")
    if os.path.isfile(src_dir) or src_dir.endswith(".list"):
        data = scan_list(src_dir, skips, wav_dir)
    else:
        data = scan_libritts(src_dir, skips)
    write_kaldi_dir(data, des_dir)
    skips.write(os.path.join(des_dir, "skipped_kaldi.tsv"))
    log.info("kaldi: %d utterances, %d speakers -> %s; %s", len(data), len(data.spk2utt), des_dir, skips.summary())
    return data, skips


def main(argv: list[str]) -> None:
    """CLI: Kaldi files in ``--des_dir`` from the LibriTTS-layout ``--src_dir`` or the list file ``--list``."""
    cli.command(argv)
    f = flags.FLAGS
    if bool(f.src_dir) == bool(f.list):
        raise cli.Error("kaldi: give one of --src_dir (a LibriTTS-layout directory) or --list (a GPT-SoVITS list)")
    if f.wav_dir and not f.list:
        raise cli.Error("kaldi: --wav_dir goes with --list")
    try:
        prepare(f.src_dir or f.list, f.des_dir, f.wav_dir)  # logs its one summary line
    except (FileNotFoundError, ValueError) as exc:
        raise cli.Error(str(exc)) from None


if __name__ == "__main__":
    flags.DEFINE_string("src_dir", None, "LibriTTS-layout directory")
    flags.DEFINE_string("list", None, "GPT-SoVITS list file: wav_path|speaker|language|text lines")
    flags.DEFINE_string("wav_dir", None, "with --list: find each wav by its file name in this folder")
    flags.DEFINE_string("des_dir", None, "output Kaldi data dir", required=True)
    cli.run_logged(main)
