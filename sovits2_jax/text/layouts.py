"""Sequence layouts of the speech LM as plain numpy: kind / id constants and the per-example builders.

Imports only numpy, so the data pipeline builds training sequences without importing jax or flax; the model
(``speech_lm``) and inference (``infer``) use the same constants. ``kinds`` is SPECIAL / TEXT / SPEECH / PAD per
position, ``ids`` the row in the table of that kind, ``targets`` the next speech token (IGNORE_ID = not scored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPECIAL, TEXT, SPEECH, PAD = 0, 1, 2, 3
SOS, TASK_ID = 0, 1
IGNORE_ID = -1


def cosyvoice2_prompt(text: Sequence[int], prompt_text: Sequence[int] = (), prompt_speech: Sequence[int] = ()):
    """Inference prompt ``[sos, prompt_text + text, task_id, prompt_speech]`` as (kinds, ids) numpy arrays."""
    all_text = list(prompt_text) + list(text)
    kinds = [SPECIAL] + [TEXT] * len(all_text) + [SPECIAL] + [SPEECH] * len(prompt_speech)
    ids = [SOS, *all_text, TASK_ID, *prompt_speech]
    return np.asarray(kinds, np.int32), np.asarray(ids, np.int32)


def gpt_sovits2_sequence(
    texts: Sequence[Sequence[int]],
    speeches: Sequence[Sequence[int]],
    *,
    speech_token_size: int,
    text_features: Sequence[np.ndarray] | None = None,
    loss_on_references: bool = False,
    speech_extra: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """GPT-SoVITS2 packed sequence ``sos, x1, task, y1, eos, ..., xn, task, yn`` for one example (numpy).

    ``len(speeches)`` is ``len(texts)`` (training: the last block is the target) or ``len(texts) - 1``
    (inference: the prompt ends with the last task_id). Targets are the next speech token (eos after each
    speech block) on the trained blocks, -1 elsewhere. ``text_segments`` numbers each text block (1, 2, ...; 0
    elsewhere). With ``text_features`` (one [len(x_i), F] array per text) a [T, F] array is returned too.

    Several codebooks per frame: ``speeches`` are codebook 0 and ``speech_extra`` holds codebooks 1..K-1 of each
    speech block ([len(y_i), K-1] each); ``codes_extra`` [T, K-1] then has a speech position's extra codes (-1
    elsewhere, also at a fed eos) and ``targets_extra`` [T, K-1] the next frame's extra codes where ``targets`` is a
    speech token (-1 where it is eos or ignored).
    """
    n = len(texts)
    if len(speeches) not in (n, n - 1) or n == 0:
        raise ValueError(f"gpt_sovits2_sequence: {n} texts need {n} or {n - 1} speech blocks, got {len(speeches)}")
    eos = speech_token_size
    kinds, ids, targets, segments, feats = [SPECIAL], [SOS], [IGNORE_ID], [0], []
    width = None if text_features is None else int(np.shape(text_features[0])[-1])
    if width is not None:
        feats.append(np.zeros((1, width), np.float32))
    extra = None if speech_extra is None else _extra_blocks(speech_extra, speeches)
    codes_x, targets_x = [None], [None]  # per position: a [K-1] row, or None for "no codes" (filled with -1 below)
    for i, x in enumerate(texts):
        x = [int(t) for t in x]
        kinds += [TEXT] * len(x) + [SPECIAL]
        ids += [*x, TASK_ID]
        segments += [i + 1] * len(x) + [0]
        targets += [IGNORE_ID] * len(x)
        codes_x += [None] * (len(x) + 1)
        targets_x += [None] * len(x)
        if width is not None:
            f = np.asarray(text_features[i], np.float32).reshape(len(x), width)
            feats += [f, np.zeros((1, width), np.float32)]
        if i >= len(speeches):
            targets.append(IGNORE_ID)  # the inference prompt's last task_id: generation starts here
            targets_x.append(None)
            break
        y = [int(t) for t in speeches[i]]
        train = i == n - 1 or loss_on_references
        targets += [*y, eos] if train else [IGNORE_ID] * (len(y) + 1)
        if extra is not None:
            rows = list(extra[i])
            codes_x += rows + ([None] if i < n - 1 else [])  # a reference's fed eos has no extra codes
            targets_x += (rows if train else [None] * len(y)) + [None] + ([None] if i < n - 1 else [])
        if i < n - 1:
            kinds += [SPEECH] * (len(y) + 1)
            ids += [*y, eos]
            segments += [0] * (len(y) + 1)
            targets += [IGNORE_ID]  # what follows the reference's eos is text, not a speech token
            if width is not None:
                feats.append(np.zeros((len(y) + 1, width), np.float32))
        else:
            kinds += [SPEECH] * len(y)
            ids += y
            segments += [0] * len(y)
            if width is not None:
                feats.append(np.zeros((len(y), width), np.float32))
    out = dict(
        kinds=np.asarray(kinds, np.int32),
        ids=np.asarray(ids, np.int32),
        targets=np.asarray(targets[: len(kinds)], np.int32),
        text_segments=np.asarray(segments, np.int32),
    )
    if width is not None:
        out["text_features"] = np.concatenate(feats, axis=0)
    if extra is not None:
        k = extra[0].shape[1] if extra else 0
        out["codes_extra"] = _rows(codes_x[: len(kinds)], k)
        out["targets_extra"] = _rows(targets_x[: len(kinds)], k)
    return out


def _extra_blocks(speech_extra, speeches) -> list[np.ndarray]:
    if len(speech_extra) != len(speeches):
        raise ValueError(f"gpt_sovits2_sequence: {len(speeches)} speech blocks but {len(speech_extra)} speech_extra")
    blocks = [np.asarray(e, np.int32) for e in speech_extra]
    for y, e in zip(speeches, blocks):
        if e.ndim != 2 or len(e) != len(y) or e.shape[1] != blocks[0].shape[1]:
            raise ValueError(f"gpt_sovits2_sequence: speech_extra blocks must be [len(y), K-1], got {e.shape}")
    return blocks


def _rows(rows, k: int) -> np.ndarray:
    out = np.full((len(rows), k), IGNORE_ID, np.int32)
    for t, r in enumerate(rows):
        if r is not None:
            out[t] = r
    return out


def pad_batch(examples: Sequence[dict[str, np.ndarray]], length: int | None = None) -> dict[str, np.ndarray]:
    """Right-pads per-example sequences (kinds PAD, targets -1, others 0) to ``length`` and adds lengths."""
    lengths = np.asarray([len(e["kinds"]) for e in examples], np.int32)
    length = int(lengths.max()) if length is None else length
    if lengths.max() > length:
        raise ValueError(f"pad_batch: a sequence of {lengths.max()} does not fit length {length}")
    fills = {"kinds": PAD, "targets": IGNORE_ID, "codes_extra": IGNORE_ID, "targets_extra": IGNORE_ID}
    out = {"lengths": lengths}
    for key in examples[0]:
        rows = []
        for e in examples:
            a = np.asarray(e[key])
            pad = [(0, length - len(a))] + [(0, 0)] * (a.ndim - 1)
            rows.append(np.pad(a, pad, constant_values=fills.get(key, 0)))
        out[key] = np.stack(rows)
    return out
