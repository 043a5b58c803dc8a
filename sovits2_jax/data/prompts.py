"""Zero-shot training prompts: same-speaker references for GPT-SoVITS2, prompt prefixes for CosyVoice2's flow."""

from __future__ import annotations

import numpy as np


class SpeakerRows:
    """Row ids of each speaker, and each row's row group (to prefer prompts that are already being read)."""

    def __init__(self, spk: np.ndarray, group: np.ndarray, usable: np.ndarray | None = None):
        """``usable`` [N] bool: rows that may serve as prompts (e.g. with text and speech tokens)."""
        self.spk = np.asarray(spk)
        self.group = np.asarray(group)
        if usable is not None:  # unusable rows go to a speaker id of their own, so they are never drawn
            self.spk = np.where(usable, self.spk, self.spk.max(initial=0) + 1)
        order = np.argsort(self.spk, kind="stable")
        bounds = np.searchsorted(self.spk[order], np.arange(int(self.spk.max(initial=-1)) + 2))
        self.rows = [order[bounds[s] : bounds[s + 1]] for s in range(len(bounds) - 1)]

    def draw(
        self, rng: np.random.Generator, target: int, *, min_prompts: int, max_prompts: int
    ) -> tuple[int, ...] | None:
        """1..k other rows of the target's speaker (never the target), or None when the speaker has too few.
        Prompts come from the target's row group when it holds enough of them."""
        cand = self.rows[int(self.spk[target])]
        cand = cand[cand != target]
        if len(cand) < min_prompts:
            return None
        k = int(rng.integers(min_prompts, min(max_prompts, len(cand)) + 1))
        same = cand[self.group[cand] == self.group[target]]
        pool = same if len(same) >= k else cand
        return tuple(int(r) for r in rng.choice(pool, size=k, replace=False))


def flow_prompt_len(rng: np.random.Generator, feat_len: int, *, prob: float = 0.5, max_ratio: float = 0.3) -> int:
    """CosyVoice2 flow training's condition prefix: with probability ``prob`` a uniform length in
    [0, int(max_ratio * feat_len)] frames of the target mel, else 0."""
    if rng.random() >= prob:
        return 0
    return int(rng.integers(0, int(max_ratio * feat_len) + 1))
