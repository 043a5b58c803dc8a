"""Running CosyVoice2's ONNX front-end models with onnxruntime: a CPU session, a campplus-style speaker embedding
of Kaldi fbank features, and S3-style speech tokens of a padded batch of whisper log-mels."""

from __future__ import annotations

import math
import os

import numpy as np


def make_session(onnx_path: str, threads: int = 1):
    """A CPU onnxruntime session of ``onnx_path`` with ``threads`` intra-op threads."""
    import onnxruntime

    if not os.path.exists(onnx_path):
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])


def embed_features(session, feats: np.ndarray) -> np.ndarray:
    """One utterance's embedding from its campplus features [T, 80]."""
    out = session.run(None, {session.get_inputs()[0].name: feats[None].astype(np.float32)})[0]
    return np.asarray(out, np.float32).reshape(-1)


def _token_lengths(mel_lengths: np.ndarray, padded: int, out_len: int) -> np.ndarray:
    """Valid tokens per utterance: each stride-2 conv (k3, p1) maps n frames to (n - 1) // 2 + 1."""
    halvings = max(0, round(math.log2(max(padded, 1) / max(out_len, 1))))
    lengths = mel_lengths.astype(np.int64)
    for _ in range(halvings):
        lengths = (lengths - 1) // 2 + 1
    return np.minimum(lengths, out_len)


def tokenize_mels(session, mels: list[np.ndarray]) -> list[np.ndarray]:
    """Speech tokens for a batch of log-mels [128, T_i] (padded with zeros to the longest)."""
    lengths = np.array([m.shape[1] for m in mels], dtype=np.int32)
    batch = np.zeros((len(mels), mels[0].shape[0], int(lengths.max())), np.float32)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    names = [i.name for i in session.get_inputs()]
    out = np.asarray(session.run(None, {names[0]: batch, names[1]: lengths})[0])
    out = out.reshape(len(mels), -1)
    valid = _token_lengths(lengths, batch.shape[2], out.shape[1]) if len(mels) > 1 else [out.shape[1]]
    return [out[i, : valid[i]].astype(np.int32) for i in range(len(mels))]


