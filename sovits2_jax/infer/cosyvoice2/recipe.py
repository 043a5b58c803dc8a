"""Recipe stage 4: synthesise a test set's ``tts_text.json`` with a trained model, as CosyVoice's inference.py.

    python -m sovits2_jax.infer.cosyvoice2.recipe --model_dir DIR --data_list data/test/parquet/data.list \\
        --tts_text tts_text.json --mode sft|zero_shot --result_dir DIR [--utt2data LIST] [--batch_size 8]

``tts_text.json`` maps an utterance id to a list of texts; each (utt, i) becomes ``{utt}_{i}.wav`` in
``result_dir`` and a ``{utt}_{i} path`` line of ``wav.scp``. Only the Parquet shards holding those utterances are
read (``utt2data.list``, next to ``data.list`` by default: one ``utt2parquet_*.json`` path per line); with
``--num_utts N`` a missing ``tts_text.json`` is first written for the first N utterances (two fixed sentences).
sft uses the utterance's ``spk_embedding``; zero_shot prompts with the utterance itself (its text, speech tokens,
24 kHz mel and ``utt_embedding``, trimmed 2:1). Utterances missing from the shards, or whose row is unusable, are
skipped and counted; each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
from absl import flags

from sovits2_jax import cli

log = logging.getLogger(__name__)

FLAGS = flags.FLAGS
COLUMNS = ["utt", "text", "audio_data", "utt_embedding", "spk_embedding", "speech_token"]


def read_tts_text(path: str) -> dict[str, list[str]]:
    """utt -> texts; a malformed file -> cli.Error."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise cli.Error(f"--tts_text {path}: unreadable ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                             for v in data.values()):  # fmt: skip
        raise cli.Error(f"--tts_text {path}: expected {{utt: [text, ...]}}")
    return data


DEFAULT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
)


def write_default_tts_text(path: str, utt2data: str, num_utts: int) -> dict[str, list[str]]:
    """A tts_text.json for the first ``num_utts`` utterances of the shards, two fixed sentences each."""
    utts: list[str] = []
    for line in Path(utt2data).read_text(encoding="utf-8").splitlines():
        if line.strip() and len(utts) < num_utts:
            utts.extend(list(json.loads(Path(line.strip()).read_text(encoding="utf-8")))[: num_utts - len(utts)])
    data = {utt: list(DEFAULT_SENTENCES) for utt in utts}
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return data


def shards_for(utt2data: str, utts: set[str]) -> dict[str, list[str]]:
    """parquet path -> the wanted utterances it holds, from the utt2parquet jsons listed in ``utt2data``."""
    try:
        lists = [line.strip() for line in Path(utt2data).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise cli.Error(f"utt2data list {utt2data}: unreadable ({e})") from e
    out: dict[str, list[str]] = {}
    for path in lists:
        try:
            mapping = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise cli.Error(f"{path} (listed in {utt2data}): unreadable ({e})") from e
        for utt, parquet in mapping.items():
            if utt in utts:
                out.setdefault(parquet, []).append(utt)
    return out


def read_rows(shards: dict[str, list[str]]) -> dict[str, dict]:
    """The wanted rows of just those shards."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = {}
    for parquet, utts in shards.items():
        table = pq.read_table(parquet, columns=COLUMNS)
        table = table.filter(pc.is_in(table["utt"], value_set=pa.array(utts, pa.string())))
        for row in table.to_pylist():
            rows[row["utt"]] = row
    return rows


def prompt_input(tts, row: dict, text_ids: np.ndarray, mode: str):
    """The ModelInput of one segment for a Parquet row (sft: speaker embedding; zero_shot: the row as prompt)."""
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.resample import resample
    from sovits2_jax.infer.cosyvoice2.frontend import trim_token_feat
    from sovits2_jax.infer.cosyvoice2.inputs import ModelInput

    if mode == "sft":
        emb = np.asarray(row["spk_embedding"], np.float32)
        return ModelInput(text=text_ids, llm_embedding=emb, flow_embedding=emb)
    f = tts.frontend
    wav, sr = load_audio(row["audio_data"])
    feat = f.speech_feat(resample(wav, sr, f.mel_config.sampling_rate))
    tokens, feat = trim_token_feat(np.asarray(row["speech_token"], np.int32), feat, f.token_mel_ratio)
    emb = np.asarray(row["utt_embedding"], np.float32)
    return ModelInput(
        text=text_ids, prompt_text=f.text_ids(row["text"]), llm_prompt_speech_token=tokens,
        flow_prompt_speech_token=tokens, prompt_speech_feat=feat, llm_embedding=emb, flow_embedding=emb,
    )  # fmt: skip


def _requests(tts, tts_text: dict[str, list[str]], rows: dict[str, dict], mode: str, skips: dict, normalize: bool):
    """(key, segments' ModelInputs) for every (utt, i), in the json's order."""
    from sovits2_jax.audio.io import AudioError
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError

    for utt, texts in tts_text.items():
        if utt not in rows:
            skips[utt] = "not in the Parquet shards of utt2data.list"
            continue
        for i, text in enumerate(texts):
            key = f"{utt}_{i}"
            try:
                segments = tts.frontend.split_text(text, normalize)
                first = prompt_input(tts, rows[utt], tts.frontend.text_ids(segments[0]), mode)
            except (FrontendError, AudioError, ValueError) as e:
                skips[key] = str(e)
                continue
            rest = [dataclasses.replace(first, text=tts.frontend.text_ids(s)) for s in segments[1:]]
            yield key, [first, *rest]


def run_stage4(
    tts, tts_text, rows, mode: str, result_dir: str, *, batch_size: int = 8, seed: int = 0, normalize: bool = True
) -> tuple[int, dict]:
    """Writes the wavs and wav.scp; returns (number written, skipped key -> reason)."""
    from sovits2_jax.audio.io import write_wav

    os.makedirs(result_dir, exist_ok=True)
    skips: dict[str, str] = {}
    scp: list[str] = []
    pending: list[tuple[str, list]] = []

    def flush():
        audio = tts.run_many([segs for _, segs in pending], seed + len(scp))
        for (key, _), wav in zip(pending, audio):
            path = os.path.abspath(os.path.join(result_dir, f"{key}.wav"))
            write_wav(path, wav, tts.sample_rate)
            scp.append(f"{key} {path}\n")
        pending.clear()

    for key, segments in _requests(tts, tts_text, rows, mode, skips, normalize):
        pending.append((key, segments))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    tmp = os.path.join(result_dir, "wav.scp.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(scp)
    os.replace(tmp, os.path.join(result_dir, "wav.scp"))
    return len(scp), skips


def define_flags() -> None:
    """The command's flags (defined only when run as a program, so importing this module defines none)."""
    flags.DEFINE_string("model_dir", None, "CosyVoice2 model dir, converted Orbax dir or trainer workdir/checkpoint")
    flags.DEFINE_string("base", None, "model dir for the parts a trainer checkpoint lacks")
    flags.DEFINE_string("data_list", None, "the test set's Parquet data.list")
    flags.DEFINE_string("utt2data", None, "utt2data.list (default: next to --data_list)")
    flags.DEFINE_string("tts_text", None, "json: utterance id -> list of texts")
    flags.DEFINE_enum(
        "mode", "zero_shot", ["sft", "zero_shot"], "sft: the utt's speaker embedding; zero_shot: as prompt"
    )
    flags.DEFINE_string("result_dir", None, "where the wavs and wav.scp go")
    flags.DEFINE_integer("batch_size", 8, "requests per batched synthesis")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_bool("text_frontend", True, "normalise and split the texts (wetext)")
    flags.DEFINE_integer("num_utts", 0, "when --tts_text does not exist: write one for this many utterances")


def main(argv: list[str]) -> int:
    from sovits2_jax.infer.cosyvoice2.frontend import FrontendError
    from sovits2_jax.infer.cosyvoice2.loading import ModelError
    from sovits2_jax.infer.cosyvoice2.tts import TTS

    if len(argv) > 1:
        raise cli.Error(f"unexpected arguments {argv[1:]}")
    for name in ("model_dir", "data_list", "tts_text", "result_dir"):
        if not getattr(FLAGS, name):
            raise cli.Error(f"give --{name}")
    if FLAGS.batch_size < 1:
        raise cli.Error(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    utt2data = FLAGS.utt2data or str(Path(FLAGS.data_list).parent / "utt2data.list")
    if FLAGS.num_utts > 0 and not os.path.exists(FLAGS.tts_text):
        write_default_tts_text(FLAGS.tts_text, utt2data, FLAGS.num_utts)
        print(f"stage 4: wrote {FLAGS.tts_text} for the first {FLAGS.num_utts} utterances")
    tts_text = read_tts_text(FLAGS.tts_text)
    rows = read_rows(shards_for(utt2data, set(tts_text)))
    if not rows:
        raise cli.Error(f"none of the {len(tts_text)} utterances of {FLAGS.tts_text} is in {utt2data}'s shards")
    try:
        tts = TTS.from_pretrained(FLAGS.model_dir, base=FLAGS.base)
        written, skips = run_stage4(
            tts,
            tts_text,
            rows,
            FLAGS.mode,
            FLAGS.result_dir,
            batch_size=FLAGS.batch_size,
            seed=FLAGS.seed,
            normalize=FLAGS.text_frontend,
        )
    except (FrontendError, ModelError) as e:
        raise cli.Error(str(e)) from e
    for key, reason in skips.items():
        log.warning("stage 4: skipped %s: %s", key, reason)
    print(f"stage 4: wrote {written} wav(s) and wav.scp to {FLAGS.result_dir}; skipped {len(skips)}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
