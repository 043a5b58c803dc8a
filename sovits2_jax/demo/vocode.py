"""Vocoder check: each ground truth's own mel through the trained HiFT, written in the evaluator's layout.

    python -m sovits2_jax.demo.vocode --model_dir DIR --wav_dir WORK/synthesis --out_dir WORK/vocoded

For every ``{utt}.ref.wav`` of --wav_dir (a synthesis directory): its 24 kHz Matcha mel (what the flow learns to
produce and HiFT learns to vocode) -> the model directory's HiFT (batched, no excitation noise) ->
``out_dir/{utt}.wav``, beside copies of ``{utt}.txt``, ``.prompt.wav`` and ``.ref.wav``. Evaluated like the
synthesis (``python -m sovits2_jax.eval --wav_dir WORK/vocoded``) it measures the vocoder alone: the score a
perfect LM and flow would reach with this HiFT, so a synthesis that scores the same is limited by its vocoder.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
from absl import flags

from sovits2_jax import cli

SUFFIXES = (".txt", ".prompt.wav", ".ref.wav")


def ground_truth_utts(wav_dir: str) -> list[str]:
    """Utterances of ``wav_dir`` that have a ``{utt}.ref.wav``, sorted."""
    return sorted(name[: -len(".ref.wav")] for name in os.listdir(wav_dir) if name.endswith(".ref.wav"))


def vocode(model_dir: str, wav_dir: str, out_dir: str, *, batch_size: int = 8) -> dict:
    """Writes ``out_dir`` (see the module docstring); returns its ``vocode.json`` content."""
    from sovits2_jax.audio.io import load_audio, write_wav
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
    from sovits2_jax.audio.resample import resample
    from sovits2_jax.infer.cosyvoice2.loading import ModelError, find_model, load_parts, model_state
    from sovits2_jax.infer.cosyvoice2.token2wav import hift_batch

    if not os.path.isdir(wav_dir):
        raise cli.Error(f"--wav_dir {wav_dir} is not a directory")
    utts = ground_truth_utts(wav_dir)
    if not utts:
        raise cli.Error(f"--wav_dir {wav_dir} holds no {{utt}}.ref.wav to vocode")
    try:
        files = find_model(model_dir)
        files.part_sources = {"hift": files.part_sources["hift"]}
        hift = model_state(load_parts(files), "hift")
    except ModelError as e:
        raise cli.Error(str(e)) from e
    mel_config = MelConfig()
    os.makedirs(out_dir, exist_ok=True)
    start, seconds = time.perf_counter(), 0.0
    for i in range(0, len(utts), batch_size):
        group = utts[i : i + batch_size]
        mels = []
        for utt in group:
            wav, sr = load_audio(os.path.join(wav_dir, f"{utt}.ref.wav"))
            mels.append(mel_spectrogram_np(resample(wav, sr, mel_config.sampling_rate), mel_config))
        for utt, audio in zip(group, hift_batch(*hift, mels, None)):
            write_wav(os.path.join(out_dir, f"{utt}.wav"), np.asarray(audio, np.float32), mel_config.sampling_rate)
            seconds += len(audio) / mel_config.sampling_rate
            for suffix in SUFFIXES:
                src = os.path.join(wav_dir, utt + suffix)
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(out_dir, utt + suffix))
    info = dict(utterances=len(utts), audio_seconds=round(seconds, 3), seconds=round(time.perf_counter() - start, 3))
    with open(os.path.join(out_dir, "vocode.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


_MODEL_DIR = flags.DEFINE_string("model_dir", None, "a CosyVoice2 model directory (its hift is used)", required=True)
_WAV_DIR = flags.DEFINE_string("wav_dir", None, "a synthesis directory holding {utt}.ref.wav", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "where the vocoded layout goes", required=True)
_BATCH = flags.DEFINE_integer("batch_size", 8, "mels per HiFT call")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    info = vocode(_MODEL_DIR.value, _WAV_DIR.value, _OUT_DIR.value, batch_size=_BATCH.value)
    print(f"vocode: {info['utterances']} ground-truth mels through the HiFT ({info['audio_seconds']} s of audio) "
          f"-> {_OUT_DIR.value} in {info['seconds']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    cli.run(main)
