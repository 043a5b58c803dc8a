"""Sequence packing for the speech LM: several GPT-SoVITS2 examples per row, told apart by segment ids.

Each example is the Speech LM's ``gpt_sovits2_sequence`` (``sos, x1, task_id, y1, eos, ..., xn, task_id, yn``);
a packed row concatenates examples with ``segment_ids`` 1, 2, ... (0 = padding) and ``positions`` restarting at 0
for each example, so with ``segment_mask`` no position attends across examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gpt_sovits2_length(text_lens: Sequence[int], speech_lens: Sequence[int]) -> int:
    """Length of ``gpt_sovits2_sequence`` for n (text, speech) blocks, the last one the target."""
    n = len(text_lens)
    return 1 + sum(int(t) + 1 for t in text_lens) + sum(int(s) for s in speech_lens) + (n - 1)


def gpt_sovits2_example(
    texts, speeches, *, speech_token_size: int, text_features=None, speech_extra=None
) -> dict[str, np.ndarray]:
    from sovits2_jax.text.layouts import gpt_sovits2_sequence

    return gpt_sovits2_sequence(
        texts, speeches, speech_token_size=speech_token_size, text_features=text_features, speech_extra=speech_extra
    )


def pack_rows(
    rows: Sequence[Sequence[dict[str, np.ndarray] | None]], length: int, feature_dim: int = 0, num_extra: int = 0
) -> dict[str, np.ndarray]:
    """[B, length] kinds / ids / targets / text_segments / segment_ids / positions, plus ``lengths`` (used
    positions) and ``num_segments`` per row. None entries (skipped examples) leave their space unused.
    ``text_segments`` count text blocks through the row (unique per row) for bidirectional text attention.
    ``feature_dim`` > 0: also ``text_features`` [B, length, feature_dim] float16 (zero off the text positions).
    ``num_extra`` > 0 (codebooks 1..K-1): also ``codes_extra`` and ``targets_extra`` [B, length, num_extra] (-1 off
    the examples)."""
    from sovits2_jax.text.layouts import IGNORE_ID, PAD

    b = len(rows)
    out = {
        "kinds": np.full((b, length), PAD, np.int32),
        "ids": np.zeros((b, length), np.int32),
        "targets": np.full((b, length), IGNORE_ID, np.int32),
        "text_segments": np.zeros((b, length), np.int32),
        "segment_ids": np.zeros((b, length), np.int32),
        "positions": np.zeros((b, length), np.int32),
        "lengths": np.zeros(b, np.int32),
        "num_segments": np.zeros(b, np.int32),
    }
    if feature_dim:
        out["text_features"] = np.zeros((b, length, feature_dim), np.float16)
    extra = ("codes_extra", "targets_extra") if num_extra else ()
    for key in extra:
        out[key] = np.full((b, length, num_extra), IGNORE_ID, np.int32)
    for i, examples in enumerate(rows):
        at, seg, text_base = 0, 0, 0
        for ex in examples:
            if ex is None:
                continue
            n = len(ex["kinds"])
            if at + n > length:
                raise ValueError(f"pack_rows: row {i} needs {at + n} positions, more than {length}")
            seg += 1
            for key in ("kinds", "ids", "targets", *(("text_features",) if feature_dim else ()), *extra):
                out[key][i, at : at + n] = ex[key]
            # text blocks numbered through the whole row, so no two examples share a text-block number
            ts = np.asarray(ex["text_segments"])
            out["text_segments"][i, at : at + n] = np.where(ts > 0, ts + text_base, 0)
            text_base += int(ts.max(initial=0))
            out["segment_ids"][i, at : at + n] = seg
            out["positions"][i, at : at + n] = np.arange(n)
            at += n
        out["lengths"][i] = at
        out["num_segments"][i] = seg
    return out
