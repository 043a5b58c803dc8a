"""The quality ladder's middle rungs for a CosyVoice2 model directory: resynthesis and the LM alone.

    python -m sovits2_jax.demo.ladder --model_dir DIR --data_list WORK/data/dev/parquet/data.list \\
        --wav_dir WORK/synthesis --out_dir WORK/ladder [--seed 0] [--batch_size 8]

For every pair of the synthesis directory (its ``pairs.tsv``: utterance, prompt utterances):

- *resynthesis*: the utterance's own speech tokens (the tokenizer is deterministic, so these are the tokens the LM
  was trained to produce) + the same prompt as the synthesis through the flow and HiFT (``vc`` mode) ->
  ``out_dir/resynthesis/{utt}.wav``; the flow's mel against the utterance's mel frame by frame (no time warping:
  ``sovits2_jax.eval.mel_distance``) and that mel through Griffin-Lim -> ``out_dir/resynthesis_gl/{utt}.wav``, so
  the flow's progress is audible while the vocoder lags;
- *LM*: the speech tokens the LM samples for the zero-shot request (as the synthesis draws them) against the
  utterance's own tokens: token error rate (edit distance / reference length) and duration ratio (sampled /
  reference tokens).

Writes ``out_dir/ladder.json`` (means and per utterance). Both wav directories are in the evaluator's layout
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


def read_pairs(wav_dir: str) -> list[tuple[str, str]]:
    """(utt, first prompt utt) of ``pairs.tsv``."""
    path = os.path.join(wav_dir, "pairs.tsv")
    if not os.path.isfile(path):
        raise cli.Error(f"{path} not found: run python -m sovits2_jax.demo.synthesize first")
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["utt"], r["prompts"].split(",")[0]) for r in csv.DictReader(f, delimiter="\t")]


def _copy_companions(wav_dir: str, folder: str, utt: str) -> None:
    for suffix in SUFFIXES:
        src = os.path.join(wav_dir, utt + suffix)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(folder, utt + suffix))


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def run(model_dir, data_list, wav_dir, out_dir, *, seed: int = 0, batch_size: int = 8) -> dict:
    """Writes both rungs' layouts and ladder.json; returns ladder.json's content."""
    from sovits2_jax.audio.griffin_lim import log_mel_to_audio
    from sovits2_jax.audio.io import load_audio, write_wav
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np
    from sovits2_jax.demo.synthesize import read_rows
    from sovits2_jax.eval.mel_distance import frame_distances
    from sovits2_jax.infer.cosyvoice2.engine import row_keys
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    pairs = read_pairs(wav_dir)
    rows = read_rows(data_list)
    missing = sorted({u for p in pairs for u in p if u not in rows})
    if missing:
        raise cli.Error(f"{data_list} lacks utterances of {wav_dir}/pairs.tsv: {', '.join(missing[:3])}")
    tts = TTS.from_pretrained(model_dir)
    cfg = MelConfig()
    folders = {name: os.path.join(out_dir, name) for name in ("resynthesis", "resynthesis_gl")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    t0, records, skipped = time.perf_counter(), [], {}
    for start in range(0, len(pairs), batch_size):
        group, tts_in, vc_in = [], [], []
        for utt, prompt in pairs[start : start + batch_size]:
            target, cue = rows[utt], rows[prompt]
            try:
                tts_in.append(tts.inputs("zero_shot", target["text"], prompt_text=cue["text"],
                                         prompt_wav=cue["audio_data"])[0])  # fmt: skip
                vc_in.append(tts.inputs("vc", source_wav=target["audio_data"], prompt_wav=cue["audio_data"])[0])
                group.append(utt)
            except FrontendError as e:
                skipped[utt] = str(e)
        if not group:
            continue
        sampled = tts.engine.speech_tokens(tts_in, seed + start)
        tokens = [x.source_speech_token for x in vc_in]
        keys = row_keys(seed + start, len(group))
        audio = tts.engine.token2wav(vc_in, tokens, keys)
        mels = tts._mels(vc_in, tokens)
        for k, utt in enumerate(group):
            truth, _ = load_audio(rows[utt]["audio_data"], target_sr=cfg.sampling_rate)
            record = dict(utt=utt, **token_scores(sampled[k], rows[utt]["speech_token"]))
            distances = frame_distances(mels[k], mel_spectrogram_np(truth, cfg))
            record.update({f"flow_{name}": value for name, value in distances.items()})
            record["tokens_match_data"] = bool(np.array_equal(tokens[k], rows[utt]["speech_token"]))
            records.append(record)
            write_wav(os.path.join(folders["resynthesis"], f"{utt}.wav"), np.asarray(audio[k], np.float32),
                      tts.sample_rate)  # fmt: skip
            write_wav(os.path.join(folders["resynthesis_gl"], f"{utt}.wav"), log_mel_to_audio(mels[k], cfg),
                      cfg.sampling_rate)  # fmt: skip
            for folder in folders.values():
                _copy_companions(wav_dir, folder, utt)
        print(f"ladder: {len(records)} of {len(pairs)} utterances", flush=True)
    keys = ("token_error", "duration_ratio", "flow_mcd", "flow_l1", "flow_length_ratio")
    info = dict(model_dir=str(model_dir), utterances=len(records), skipped=skipped,
                seconds=round(time.perf_counter() - t0, 2), means={k: _mean(records, k) for k in keys},
                tokens_match_data=all(r["tokens_match_data"] for r in records), rows=records)  # fmt: skip
    with open(os.path.join(out_dir, "ladder.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def define_flags() -> None:
    """The command's flags (defined only when run as a program)."""
    flags.DEFINE_string("model_dir", None, "a CosyVoice2 model directory")
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
        info = run(F.model_dir, F.data_list, F.wav_dir, F.out_dir, seed=F.seed, batch_size=F.batch_size)
    except (ModelError, ConversionError) as e:
        raise cli.Error(str(e)) from e
    m = {k: "n/a" if v is None else f"{v:.3f}" for k, v in info["means"].items()}
    print(f"ladder: LM token error {m['token_error']}, duration ratio {m['duration_ratio']}; flow mel "
          f"(frame by frame) MCD {m['flow_mcd']} dB, L1 {m['flow_l1']} over {info['utterances']} utterances; "
          f"skipped {len(info['skipped'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
