"""Which dev utterance prompts which: same-speaker pairs for the demo's zero-shot synthesis."""

from __future__ import annotations

import collections
import dataclasses
import itertools

from sovits2_jax import cli


@dataclasses.dataclass(frozen=True)
class Pair:
    """A target utterance and the same-speaker utterances prompting it (the first is the evaluator's prompt)."""

    utt: str
    speaker: str
    prompts: tuple[str, ...]


def plan_pairs(rows: dict[str, dict], num: int = 0, references: int = 1) -> tuple[list[Pair], list[str]]:
    """(pairs round-robin over the speakers, speakers left out for having a single utterance)."""
    if references < 1:
        raise cli.Error(f"--references must be >= 1, got {references}")
    by_speaker: dict[str, list[str]] = collections.defaultdict(list)
    for utt in sorted(rows):
        by_speaker[rows[utt]["spk"]].append(utt)
    groups, alone = [], []
    for spk in sorted(by_speaker):
        utts = by_speaker[spk]
        if len(utts) < 2:
            alone.append(spk)
            continue
        halves = (utts[0::2], utts[1::2])
        groups.append([Pair(u, spk, tuple(halves[1 - i % 2][:references])) for i, u in enumerate(utts)])
    pairs = [p for level in itertools.zip_longest(*groups) for p in level if p is not None]
    return (pairs[:num] if num > 0 else pairs), alone


def batches(items: list, size: int):
    """``items`` in consecutive chunks of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
