"""Input pipeline throughput and padding: ours vs cosyvoice-minicpmo's processor chain on the same Parquet files.

    python -m sovits2_jax.bench.pipeline [--rows=300] [--rows_per_file=100] [--max_seconds=8] [--workers=2]

Synthetic 24 kHz utterances (no resampling on either side) in CosyVoice's Parquet schema. The reference chain is
CosyVoice2's flow data pipeline: parquet_opener -> tokenize -> filter -> compute_fbank (Matcha mel, token_mel_ratio
2) -> parse_embedding -> shuffle(1000) -> sort(500) -> dynamic batch (2000 frames) -> padding, fed our Qwen
tokenizer (theirs needs a HF model dir) and a soundfile-backed ``torchaudio.load`` (no CPU torchaudio wheel here).
Both run in this process on one thread; ours with configs/data.py:flow (worker_count 0, read_threads 1).
Padding waste = padded mel frames / all frames of the batched [B, T] speech_feat arrays.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

from absl import flags

from sovits2_jax import cli

flags.DEFINE_integer("rows", 300, "synthetic utterances")
flags.DEFINE_integer("rows_per_file", 100, "utterances per Parquet file")
flags.DEFINE_float("max_seconds", 8.0, "longest utterance")
flags.DEFINE_integer("workers", 2, "also time ours with this many mp_prefetch workers")


def _torchaudio_load(source):
    import soundfile as sf
    import torch

    wav, sr = sf.read(source if not isinstance(source, bytes) else io.BytesIO(source), dtype="float32", always_2d=True)
    return torch.from_numpy(wav.T.copy()), sr


class _Tokenizer:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text, allowed_special="all"):
        return self.tok.encode(text)


def run_reference(data_list: str) -> tuple[int, float, int, int]:
    """(samples, seconds, real frames, padded total frames) of the cosyvoice processor chain."""
    import functools

    import torch

    from sovits2_jax.parity.torch_refs import import_cosyvoice
    from sovits2_jax.text.tokenizer import get_tokenizer

    proc = import_cosyvoice("cosyvoice.dataset.processor")
    sys.modules["torchaudio"].load = _torchaudio_load
    proc.torchaudio = sys.modules["torchaudio"]
    from matcha.utils.audio import mel_spectrogram

    feat = functools.partial(mel_spectrogram, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480,
                             win_size=1920, fmin=0, fmax=8000, center=False)  # fmt: skip
    tok = _Tokenizer(get_tokenizer("cosyvoice2"))
    torch.set_num_threads(1)
    feat(torch.zeros(1, 24000))  # builds and caches the mel basis and window
    t0 = time.perf_counter()
    with open(data_list) as f:
        data = ({"src": line.strip()} for line in f if line.strip())
        data = proc.parquet_opener(data)
        data = proc.tokenize(data, lambda: tok, "all")
        data = proc.filter(data, max_length=40960, min_length=100, token_max_length=200, token_min_length=1)
        data = proc.compute_fbank(data, feat, token_mel_ratio=2)
        data = proc.parse_embedding(data, True)
        data = proc.shuffle(data, shuffle_size=1000)
        data = proc.sort(data, sort_size=500)
        batches = proc.batch(data, batch_type="dynamic", max_frames_in_batch=2000)
        n, real, total = 0, 0, 0
        for b in proc.padding(batches, use_spk_embedding=False):
            n += b["speech_feat"].shape[0]
            real += int(b["speech_feat_len"].sum())
            total += int(b["speech_feat"].shape[0] * b["speech_feat"].shape[1])
    return n, time.perf_counter() - t0, real, total


def run_ours(data_list: str, *, worker_count: int = 0, read_threads: int = 1, num_buckets: int = 0) -> tuple:
    """(samples, seconds, real frames, padded total frames, distinct shapes, % waste of full batches) of our
    flow pipeline."""
    sys.path.insert(0, os.getcwd())
    from sovits2_jax.audio.mel import mel_filterbank
    from sovits2_jax.configs import data as data_configs
    from sovits2_jax.data import pipeline
    from sovits2_jax.text.tokenizer import get_tokenizer

    cfg = data_configs.get_config("flow").data
    cfg.worker_count, cfg.read_threads, cfg.num_epochs = worker_count, read_threads, 1
    cfg.num_buckets = num_buckets
    get_tokenizer(cfg.tokenizer)  # one-time loads, outside the timing as the reference's imports are
    mel_filterbank(24000, 1920, 80, 0.0, 8000.0)
    t0 = time.perf_counter()
    batches = pipeline.make_batches(cfg, data_list=data_list, process_index=0, process_count=1)
    n, real, total, shapes, full_real, full_total = 0, 0, 0, set(), 0, 0
    first = None
    try:
        for b in batches:
            if first is None:
                first, n_first = time.perf_counter(), int(b["valid"].sum())
            n += int(b["valid"].sum())
            r, t = int(b["speech_feat_len"].sum()), int(b["speech_feat"].shape[0] * b["speech_feat"].shape[1])
            real, total = real + r, total + t
            if b["valid"].all():  # a full bucket (the epoch's last partial batch of each bucket excluded)
                full_real, full_total = full_real + r, full_total + t
            shapes.add(b["speech_feat"].shape)
    finally:
        batches.close()
    end = time.perf_counter()
    steady = (n - n_first) / max(end - first, 1e-9)  # after the first batch: worker start-up excluded
    return n, end - t0, real, total, len(shapes), 100 * (1 - full_real / max(full_total, 1)), first - t0, steady


def main(argv) -> None:
    del argv
    a = flags.FLAGS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sovits2_jax.data.prep import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        rows = synthetic.make_rows(a.rows, num_speakers=8, min_seconds=1.0, max_seconds=a.max_seconds, seed=0)
        data_list = synthetic.write_corpus(tmp, rows, rows_per_file=a.rows_per_file)
        del rows
        n_ref, t_ref, real_ref, total_ref = run_reference(data_list)
        n_ours, t_ours, real_ours, total_ours, shapes, waste_full, _, _ = run_ours(data_list)
        rate_ref, rate_ours = n_ref / t_ref, n_ours / t_ours
        print(f"bench pipeline data: {a.rows} utterances of 1-{a.max_seconds:g} s at 24 kHz in "
              f"{-(-a.rows // a.rows_per_file)} parquet files; ours {n_ours} samples, torch {n_ref}")  # fmt: skip
        print(
            f"bench pipeline samples/s (1 thread): ours {rate_ours:.1f}, torch {rate_ref:.1f}, "
            f"ratio ours/torch {rate_ours / rate_ref:.2f}",
            flush=True,
        )
        waste_ours, waste_ref = 100 * (1 - real_ours / total_ours), 100 * (1 - real_ref / total_ref)
        print(
            f"bench pipeline padding waste: ours {waste_ours:.1f}% ({waste_full:.1f}% in full buckets; "
            f"{shapes} distinct shapes), "
            f"torch {waste_ref:.1f}% (every batch a new shape)",
            flush=True,
        )
        *_, real_f, total_f, _, waste_full_f, _, _ = run_ours(data_list, num_buckets=shapes)
        print(
            f"bench pipeline padding waste with {shapes} bucket lengths fitted to the corpus (data.num_buckets): "
            f"ours {100 * (1 - real_f / total_f):.1f}% ({waste_full_f:.1f}% in full buckets), torch {waste_ref:.1f}%",
            flush=True,
        )
        if a.workers > 0:
            *_, t_first, steady = run_ours(data_list, worker_count=a.workers, read_threads=1)
            print(
                f"bench pipeline samples/s ours with {a.workers} mp_prefetch workers after the first batch: "
                f"{steady:.1f} (first batch after {t_first:.1f} s), ratio vs torch 1 thread {steady / rate_ref:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    cli.run(main)
