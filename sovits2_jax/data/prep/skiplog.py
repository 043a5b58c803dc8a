"""Counted, logged record of inputs a data-prep stage skipped."""

from __future__ import annotations

import collections
import logging
import os

log = logging.getLogger("sovits2_jax.data")


class SkipLog:
    """Collects (item, reason) pairs; each is logged once, counts are summarised per reason."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.items: list[tuple[str, str]] = []

    def add(self, item: str, reason: str) -> None:
        self.items.append((item, reason))
        log.warning("%s: skipped %s: %s", self.stage, item, reason)

    def record(self, item: str, reason: str) -> None:
        """Counts a skip logged by an earlier run (a resumed stage still lists what its finished part skipped)."""
        self.items.append((item, reason))

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(reason.split(":")[0] for _, reason in self.items))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        if not self.items:
            return f"{self.stage}: nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{self.stage}: skipped {len(self.items)} ({parts})"

    def write(self, path: str | os.PathLike) -> None:
        """``item<TAB>reason`` lines (an empty file when nothing was skipped)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for item, reason in self.items:
                f.write(f"{item}\t{reason}\n")
        os.replace(tmp, path)
