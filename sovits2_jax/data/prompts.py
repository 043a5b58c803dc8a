"""Zero-shot training prompts: same-speaker references for GPT-SoVITS2, prompt prefixes for CosyVoice2's flow."""

from __future__ import annotations

import random

import numpy as np


class SpeakerRows:
    """Row ids of each speaker, sorted by row group (to prefer prompts that are already being read)."""

    def __init__(self, spk: np.ndarray, group: np.ndarray, usable: np.ndarray | None = None):
        """``usable`` [N] bool: rows that may serve as prompts (e.g. with text and speech tokens)."""
        spk = np.asarray(spk, np.int64)
        group = np.asarray(group, np.int64)
        if usable is not None:  # unusable rows go to a speaker id of their own, so they are never drawn
            spk = np.where(usable, spk, spk.max(initial=0) + 1)
        self.spk = spk
        self.order = np.lexsort((np.arange(len(spk)), group, spk))  # by speaker, then row group
        self.pos = np.empty(len(spk), np.int64)
        self.pos[self.order] = np.arange(len(spk))
        s_sorted, g_sorted = spk[self.order], group[self.order]
        new_spk = np.r_[True, s_sorted[1:] != s_sorted[:-1]] if len(spk) else np.zeros(0, bool)
        new_grp = new_spk | np.r_[True, g_sorted[1:] != g_sorted[:-1]] if len(spk) else np.zeros(0, bool)
        self.spk_start, self.spk_end = self._runs(new_spk)
        self.grp_start, self.grp_end = self._runs(new_grp)

    @staticmethod
    def _runs(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[start, end) of the run holding each sorted position."""
        idx = np.flatnonzero(starts)
        ends = np.r_[idx[1:], len(starts)]
        which = np.cumsum(starts) - 1
        return idx[which], ends[which]

    def draw(self, rnd: random.Random, target: int, *, min_prompts: int, max_prompts: int) -> tuple[int, ...] | None:
        """1..k other rows of the target's speaker (never the target), or None when the speaker has too few.
        Prompts come from the target's row group when it holds enough of them."""
        p = int(self.pos[target])
        s0, s1 = int(self.spk_start[p]), int(self.spk_end[p])
        others = s1 - s0 - 1
        if others < min_prompts:
            return None
        k = rnd.randint(min_prompts, min(max_prompts, others))
        g0, g1 = int(self.grp_start[p]), int(self.grp_end[p])
        base, size = (g0, g1 - g0) if g1 - g0 - 1 >= k else (s0, s1 - s0)
        t = p - base
        picks = rnd.sample(range(size - 1), k)  # positions among the others; skip over the target
        return tuple(int(self.order[base + q + (q >= t)]) for q in picks)


def flow_prompt_len(rng: np.random.Generator, feat_len: int, *, prob: float = 0.5, max_ratio: float = 0.3) -> int:
    """CosyVoice2 flow training's condition prefix: with probability ``prob`` a uniform length in
    [0, int(max_ratio * feat_len)] frames of the target mel, else 0."""
    if rng.random() >= prob:
        return 0
    return int(rng.integers(0, int(max_ratio * feat_len) + 1))
