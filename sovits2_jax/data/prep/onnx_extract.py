"""Speaker embeddings and speech tokens from ONNX models with CosyVoice2's signatures (onnxruntime).

    python -m sovits2_jax.data.prep.onnx_extract embedding --dir data/train --onnx_path campplus.onnx
    python -m sovits2_jax.data.prep.onnx_extract token --dir data/train --onnx_path speech_tokenizer_v2.onnx

Embedding model (campplus-compatible): first input = Kaldi fbank [1, T, 80] with the time mean removed, output
[1, D] -> ``utt2embedding.npz`` and ``spk2embedding.npz`` (speaker mean); or resemblyzer's encoder exported by
``resemblyzer_encoder.export_resemblyzer`` (recognised by its metadata). Token model (S3-compatible): inputs =
whisper log-mel [B, 128, T] float32 and lengths [B] int32, first output = tokens [B, T'] -> ``utt2speech_token.npz``.
Audio is resampled to 16 kHz. Audio over 30 s gets no tokens (as in CosyVoice) and is reported. Work is split
into chunks over worker processes; tokens may be batched (padded; the S3 encoders mask padding).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Callable

import numpy as np
from absl import flags
from tqdm import tqdm

from sovits2_jax import cli
from sovits2_jax.audio.fbank import campplus_features
from sovits2_jax.audio.io import AudioError, load_audio
from sovits2_jax.audio.onnx_models import embed_features, make_session, tokenize_mels
from sovits2_jax.audio.whisper_mel import log_mel_spectrogram
from sovits2_jax.data.prep import feature_store, resemblyzer_encoder
from sovits2_jax.data.prep.kaldi import read_kaldi_dir
from sovits2_jax.data.prep.skiplog import SkipLog

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_TOKEN_SECONDS = 30.0
CHUNK = 16


def check_embedding_model(session, onnx_path: str) -> None:
    if resemblyzer_encoder.is_resemblyzer(session):
        return
    inputs = session.get_inputs()
    shape = inputs[0].shape
    if len(shape) != 3 or shape[2] != 80:
        raise ValueError(f"{onnx_path}: not campplus-compatible: first input must be [1, T, 80], got {shape}")


def check_token_model(session, onnx_path: str) -> None:
    inputs = session.get_inputs()
    if len(inputs) < 2 or len(inputs[0].shape) != 3 or inputs[0].shape[1] != 128:
        shapes = [(i.name, i.shape) for i in inputs]
        raise ValueError(f"{onnx_path}: not S3-compatible: need inputs [B, 128, T] and [B] lengths, got {shapes}")


# ---- worker side ---------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(kind: str, onnx_path: str, batch_size: int) -> None:
    session = make_session(onnx_path)
    _WORKER.update(kind=kind, session=session, batch_size=batch_size)
    _WORKER["resemblyzer"] = resemblyzer_encoder.is_resemblyzer(session)


def _load16k(items: list[tuple[str, str]]):
    """(utt, 16 kHz audio or None, skip reason or None) per item."""
    for utt, path in items:
        try:
            yield utt, load_audio(path, target_sr=SAMPLE_RATE)[0], None
        except AudioError as exc:
            yield utt, None, "unreadable audio: " + str(exc).split(": ", 1)[-1]


def _embedding_chunk(items: list[tuple[str, str]]) -> list[tuple[str, np.ndarray | None, str | None]]:
    out = []
    for utt, wav, reason in _load16k(items):
        if reason:
            out.append((utt, None, reason))
            continue
        if _WORKER["resemblyzer"]:
            out.append((utt, resemblyzer_encoder.embed(_WORKER["session"], wav), None))
            continue
        feats = campplus_features(wav)
        if feats.shape[0] == 0:
            out.append((utt, None, "too short: shorter than one 25 ms frame"))
            continue
        out.append((utt, embed_features(_WORKER["session"], feats), None))
    return out


def _token_chunk(items: list[tuple[str, str]]) -> list[tuple[str, np.ndarray | None, str | None]]:
    out, ready = [], []
    for utt, wav, reason in _load16k(items):
        if reason:
            out.append((utt, None, reason))
            continue
        seconds = len(wav) / SAMPLE_RATE
        if seconds > MAX_TOKEN_SECONDS:
            out.append((utt, None, f"longer than 30 s: {seconds:.1f} s"))
            continue
        if len(wav) < 2 * 160:
            out.append((utt, None, "too short: under 20 ms"))
            continue
        ready.append((utt, log_mel_spectrogram(wav)))
    ready.sort(key=lambda x: x[1].shape[1])  # similar lengths share a batch
    bs = _WORKER["batch_size"]
    for i in range(0, len(ready), bs):
        group = ready[i : i + bs]
        for (utt, _), tokens in zip(group, tokenize_mels(_WORKER["session"], [m for _, m in group])):
            out.append((utt, tokens, None))
    return out


def _run(kind: str, items: list[tuple[str, str]], onnx_path: str, workers: int, batch_size: int, desc: str):
    fn: Callable = _embedding_chunk if kind == "embedding" else _token_chunk
    size = max(1, min(CHUNK, -(-len(items) // (4 * max(1, workers)))))  # keep every worker busy on small sets
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    results = []
    with tqdm(total=len(items), desc=desc, unit="utt", disable=None, dynamic_ncols=True) as bar:
        if workers <= 0:
            _init_worker(kind, onnx_path, batch_size)
            for chunk in chunks:
                results.extend(fn(chunk))
                bar.update(len(chunk))
        else:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["sovits2_jax.data.prep.onnx_extract", "onnxruntime"])
            with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(kind, onnx_path, batch_size)
            ) as pool:
                for future in concurrent.futures.as_completed([pool.submit(fn, c) for c in chunks]):
                    res = future.result()
                    results.extend(res)
                    bar.update(len(res))
    return results


def extract_embeddings(data_dir: str, onnx_path: str, *, workers: int = 2, torch_pt: bool = False) -> SkipLog:
    """Stage 1: ``utt2embedding.npz`` and ``spk2embedding.npz`` in ``data_dir``."""
    session = make_session(onnx_path)
    check_embedding_model(session, onnx_path)
    del session
    data = read_kaldi_dir(data_dir)
    results = _run("embedding", list(data.utt2wav.items()), onnx_path, workers, 1, "embedding")
    skips = SkipLog("embedding")
    utt2emb = {}
    for utt, emb, reason in sorted(results, key=lambda r: r[0]):
        if reason is not None:
            skips.add(utt, reason)
        elif not np.all(np.isfinite(emb)):
            skips.add(utt, "non-finite embedding")
        else:
            utt2emb[utt] = emb
    utt2emb = {u: utt2emb[u] for u in data.utt2wav if u in utt2emb}
    spk2list: dict[str, list[np.ndarray]] = {}
    for utt, emb in utt2emb.items():
        spk2list.setdefault(data.utt2spk[utt], []).append(emb)
    spk2emb = {spk: np.mean(np.stack(v), axis=0) for spk, v in spk2list.items()}
    feature_store.save_vectors(os.path.join(data_dir, "utt2embedding.npz"), utt2emb)
    feature_store.save_vectors(os.path.join(data_dir, "spk2embedding.npz"), spk2emb)
    if torch_pt:
        feature_store.save_torch_pt(os.path.join(data_dir, "utt2embedding.pt"), utt2emb)
        feature_store.save_torch_pt(os.path.join(data_dir, "spk2embedding.pt"), spk2emb)
    skips.write(os.path.join(data_dir, "skipped_embedding.tsv"))
    log.info("embedding: %d utterances, %d speakers; %s", len(utt2emb), len(spk2emb), skips.summary())
    return skips


def extract_speech_tokens(
    data_dir: str, onnx_path: str, *, workers: int = 2, batch_size: int = 1, torch_pt: bool = False
) -> SkipLog:
    """Stage 2: ``utt2speech_token.npz`` in ``data_dir`` (utterances over 30 s skipped and listed)."""
    session = make_session(onnx_path)
    check_token_model(session, onnx_path)
    if batch_size > 1 and isinstance(session.get_inputs()[0].shape[0], int) and session.get_inputs()[0].shape[0] == 1:
        log.warning("token: %s has a fixed batch of 1; using batch_size 1", onnx_path)
        batch_size = 1
    del session
    data = read_kaldi_dir(data_dir)
    results = _run("token", list(data.utt2wav.items()), onnx_path, workers, max(1, batch_size), "speech token")
    skips = SkipLog("speech_token")
    by_utt = {}
    for utt, tokens, reason in sorted(results, key=lambda r: r[0]):
        if reason is not None:
            skips.add(utt, reason)
        else:
            by_utt[utt] = tokens
    utt2tok = {u: by_utt[u] for u in data.utt2wav if u in by_utt}
    feature_store.save_sequences(os.path.join(data_dir, "utt2speech_token.npz"), utt2tok)
    if torch_pt:
        feature_store.save_torch_pt(os.path.join(data_dir, "utt2speech_token.pt"), utt2tok)
    skips.write(os.path.join(data_dir, "skipped_speech_token.tsv"))
    log.info("speech token: %d utterances; %s", len(utt2tok), skips.summary())
    return skips


def main(argv: list[str]) -> None:
    """CLI: ``embedding`` or ``token`` for the Kaldi data dir ``--dir``."""
    what = cli.command(argv, ("embedding", "token"))
    f = flags.FLAGS
    if what == "embedding":  # each logs its one summary line
        extract_embeddings(f.dir, f.onnx_path, workers=f.num_workers, torch_pt=f.torch_pt)
    else:
        extract_speech_tokens(f.dir, f.onnx_path, workers=f.num_workers, batch_size=f.batch_size, torch_pt=f.torch_pt)


if __name__ == "__main__":
    flags.DEFINE_string("dir", None, "Kaldi data dir (wav.scp, utt2spk)", required=True)
    flags.DEFINE_string("onnx_path", None, "speaker or speech-tokenizer ONNX model", required=True)
    flags.DEFINE_integer("num_workers", 2, "extraction processes")
    flags.DEFINE_integer("batch_size", 1, "token model batch (padded)")
    flags.DEFINE_bool("torch_pt", False, "also write CosyVoice's .pt files (needs torch)")
    cli.run_logged(main)
