"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds; ``fn`` must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def report(name: str, what: str, ours_ms: float, torch_ms: float, unit: str = "ms") -> str:
    line = (
        f"bench {name} {what}: ours {_figure(ours_ms)} {unit}, torch {_figure(torch_ms)} {unit}, "
        f"ratio torch/ours {torch_ms / ours_ms:.2f}"
    )
    print(line, flush=True)
    return line


def _figure(value: float) -> str:
    """One decimal, or three significant digits below 10 (RTFs are fractions of a second per second)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
