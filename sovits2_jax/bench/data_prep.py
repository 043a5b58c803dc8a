"""Data-preparation throughput: our stages 1-3 (2 workers) vs CosyVoice's tools' way (one process, torch mel).

1. Frontends per utterance: our numpy Kaldi fbank vs kaldi-native-fbank (C++), our whisper log-mel vs
   s3tokenizer's torch ``log_mel_spectrogram``.
2. Stages on a built-in corpus: embeddings (fbank + campplus-signature ONNX), speech tokens (whisper mel + S3
   ONNX), Parquet; ours with worker processes vs a sequential loop written like CosyVoice's
   ``extract_embedding.py`` / ``extract_speech_token.py`` / ``make_parquet_list.py`` (knf fbank, torch mel,
   pandas). The S3 model is a random-init S3TokenizerV2 at its real size (or small with --small); the embedding
   model is the small campplus-signature network (campplus itself is not shipped).

python -m sovits2_jax.bench.data_prep [--utterances=64] [--workers=2] [--batch_size=4] [--small]
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import flags

from sovits2_jax import cli
from sovits2_jax.bench.timing import compare, report

flags.DEFINE_integer("utterances", 64, "utterances in the built-in corpus")
flags.DEFINE_integer("speakers", 8, "speakers in the built-in corpus")
flags.DEFINE_integer("workers", 2, "our worker processes")
flags.DEFINE_integer("batch_size", 4, "speech-token extraction batch size")
flags.DEFINE_bool("small", False, "small S3 encoder instead of the real size")


def _knf_fbank(wav: np.ndarray) -> np.ndarray:
    """80-bin Kaldi fbank of a 16 kHz waveform with kaldi-native-fbank, without dither (CosyVoice's tools)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    f = knf.OnlineFbank(opts)
    f.accept_waveform(16000, wav.tolist())
    f.input_finished()
    return np.stack([f.get_frame(i) for i in range(f.num_frames_ready)])


def bench_frontends(wavs16k: list[np.ndarray]) -> None:
    import torch

    from sovits2_jax.audio.fbank import fbank
    from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    import s3tokenizer

    torch.set_num_threads(1)
    n = len(wavs16k)
    compare("data_prep", f"fbank per utterance ({n} utts, vs kaldi-native-fbank)",
            lambda: [fbank(w) for w in wavs16k], lambda: [_knf_fbank(w) for w in wavs16k], scale=1e3 / n)  # fmt: skip
    compare("data_prep", f"whisper log-mel per utterance ({n} utts, vs s3tokenizer torch)",
            lambda: [log_mel_spectrogram(w) for w in wavs16k],
            lambda: [s3tokenizer.log_mel_spectrogram(torch.from_numpy(w)) for w in wavs16k], scale=1e3 / n)  # fmt: skip


def reference_stages(data_dir: str, campplus: str, tokenizer: str, out_dir: str) -> dict[str, float]:
    """CosyVoice's tools, one process: per utterance load, knf fbank / torch mel, onnxruntime; pandas Parquet."""
    import pandas as pd
    import s3tokenizer  # stubbed torchaudio already in place
    import torch

    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.audio.onnx_models import make_session
    from sovits2_jax.data.prep.kaldi import read_kaldi_dir

    data = read_kaldi_dir(data_dir)
    times = {}
    t = time.perf_counter()
    sess = make_session(campplus)
    utt2emb, spk2embs = {}, {}
    for utt, path in data.utt2wav.items():
        wav, _ = load_audio(path, target_sr=16000)
        feat = _knf_fbank(wav)
        feat = feat - feat.mean(0, keepdims=True)
        emb = sess.run(None, {sess.get_inputs()[0].name: feat[None]})[0].flatten().tolist()
        utt2emb[utt] = emb
        spk2embs.setdefault(data.utt2spk[utt], []).append(emb)
    spk2emb = {k: np.mean(v, axis=0).tolist() for k, v in spk2embs.items()}
    times["embedding"] = time.perf_counter() - t
    t = time.perf_counter()
    sess = make_session(tokenizer)
    utt2tok = {}
    for utt, path in data.utt2wav.items():
        wav, _ = load_audio(path, target_sr=16000)
        feat = s3tokenizer.log_mel_spectrogram(torch.from_numpy(wav)[None], n_mels=128)
        names = [i.name for i in sess.get_inputs()]
        utt2tok[utt] = sess.run(None, {names[0]: feat.numpy(), names[1]: np.array([feat.shape[2]], np.int32)})[0]
        utt2tok[utt] = utt2tok[utt].flatten().tolist()
    times["speech token"] = time.perf_counter() - t
    t = time.perf_counter()
    utts = list(data.utt2wav)
    df = pd.DataFrame()
    df["utt"] = utts
    df["wav"] = [data.utt2wav[u] for u in utts]
    df["audio_data"] = [open(data.utt2wav[u], "rb").read() for u in utts]  # noqa: SIM115
    df["text"] = [data.utt2text[u] for u in utts]
    df["spk"] = [data.utt2spk[u] for u in utts]
    df["utt_embedding"] = [utt2emb[u] for u in utts]
    df["spk_embedding"] = [spk2emb[data.utt2spk[u]] for u in utts]
    df["speech_token"] = [utt2tok[u] for u in utts]
    os.makedirs(out_dir, exist_ok=True)
    df.to_parquet(os.path.join(out_dir, "parquet_000000000.tar"))
    times["parquet"] = time.perf_counter() - t
    return times


def our_stages(data_dir: str, campplus: str, tokenizer: str, out_dir: str, workers: int, batch_size: int):
    from sovits2_jax.data.prep import onnx_extract, parquet_writer
    from sovits2_jax.data.prep.kaldi import read_kaldi_dir

    times = {}
    t = time.perf_counter()
    onnx_extract.extract_embeddings(data_dir, campplus, workers=workers)
    times["embedding"] = time.perf_counter() - t
    t = time.perf_counter()
    onnx_extract.extract_speech_tokens(data_dir, tokenizer, workers=workers, batch_size=batch_size)
    times["speech token"] = time.perf_counter() - t
    t = time.perf_counter()
    per_shard = -(-len(read_kaldi_dir(data_dir)) // workers)  # one shard per worker
    parquet_writer.make_parquet_list(data_dir, out_dir, num_utts_per_parquet=per_shard, num_processes=workers)
    times["parquet"] = time.perf_counter() - t
    return times


def main(argv) -> None:
    del argv
    a = flags.FLAGS
    import logging

    logging.basicConfig(level=logging.ERROR)
    from sovits2_jax.audio.io import load_audio
    from sovits2_jax.data.prep import corpus, kaldi
    from sovits2_jax.parity.reference_models import export_campplus_like, export_s3_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        stats = corpus.build_corpus(os.path.join(tmp, "corpus"), utterances=a.utterances, num_speakers=a.speakers,
                                    langs=["en", "fr", "de", "es"], workers=a.workers)  # fmt: skip
        hours = stats["hours"]
        campplus = export_campplus_like(os.path.join(tmp, "campplus_like.onnx"))
        tokenizer = export_s3_tokenizer(os.path.join(tmp, "s3_v2.onnx"), small=a.small)
        size = "small" if a.small else "real-size"
        data_dir = os.path.join(tmp, "data")
        kaldi.prepare(os.path.join(tmp, "corpus"), data_dir)
        wavs = [load_audio(w, target_sr=16000)[0] for w in kaldi.read_kaldi_dir(data_dir).utt2wav.values()]
        bench_frontends(wavs[:16])
        ref = reference_stages(data_dir, campplus, tokenizer, os.path.join(tmp, "ref_parquet"))
        ours = our_stages(data_dir, campplus, tokenizer, os.path.join(tmp, "parquet"), a.workers, a.batch_size)
    n = a.utterances
    print(f"bench data_prep corpus: {n} utterances, {hours * 3600:.0f} s of audio, S3TokenizerV2 {size} random-init, "
          f"campplus-signature small net", flush=True)  # fmt: skip
    for stage in ("embedding", "speech token", "parquet"):
        report("data_prep", f"stage {stage} ({a.workers} workers vs 1 process)", ours[stage] * 1e3 / n,
               ref[stage] * 1e3 / n, "ms/utt")  # fmt: skip
    total_ours, total_ref = sum(ours.values()), sum(ref.values())
    split = ", ".join(f"{k} {100 * v / total_ours:.0f}%" for k, v in ours.items())
    print(
        f"bench data_prep throughput: ours {n / total_ours:.2f} utt/s = {hours / (total_ours / 3600):.0f} "
        f"audio-hours/hour ({a.workers} workers; {split}), torch {n / total_ref:.2f} utt/s = "
        f"{hours / (total_ref / 3600):.0f} audio-hours/hour (1 process), ratio torch/ours {total_ref / total_ours:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    cli.run(main)
