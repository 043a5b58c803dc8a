"""Files holding per-utterance vectors (speaker embeddings) and integer sequences (speech tokens).

``.npz`` with ``keys`` (str) plus ``values`` [N, D] float32, or ``flat`` int32 + ``offsets`` [N + 1] for sequences.
Written to a temporary name and renamed. ``save_torch_pt`` writes CosyVoice's ``.pt`` dicts for its own tools.
"""

from __future__ import annotations

import os

import numpy as np


def _atomic_savez(path: str, **arrays) -> None:
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def save_vectors(path: str, table: dict[str, np.ndarray]) -> None:
    keys = list(table)
    dim = len(next(iter(table.values()))) if table else 0
    values = np.stack([np.asarray(table[k], np.float32) for k in keys]) if keys else np.zeros((0, dim), np.float32)
    _atomic_savez(path, keys=np.array(keys, dtype=str), values=values)


def load_vectors(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (run the embedding stage first)")
    with np.load(path) as z:
        return {str(k): v for k, v in zip(z["keys"], z["values"])}


def save_sequences(path: str, table: dict[str, np.ndarray]) -> None:
    keys = list(table)
    seqs = [np.asarray(table[k], np.int32).reshape(-1) for k in keys]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    flat = np.concatenate(seqs) if seqs else np.zeros((0,), np.int32)
    _atomic_savez(path, keys=np.array(keys, dtype=str), flat=flat, offsets=offsets)


def load_sequences(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (run the speech-token stage first)")
    with np.load(path) as z:
        flat, offsets = z["flat"], z["offsets"]
        return {str(k): flat[offsets[i] : offsets[i + 1]] for i, k in enumerate(z["keys"])}


def save_torch_pt(path: str, table: dict[str, np.ndarray]) -> None:
    """CosyVoice's format (``torch.save`` of {key: list}); needs torch."""
    import torch

    tmp = f"{path}.tmp"
    torch.save({k: np.asarray(v).tolist() for k, v in table.items()}, tmp)
    os.replace(tmp, path)
