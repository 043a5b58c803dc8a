"""Timing shared by the benchmarks: warm both sides up, interleave them, report medians with their spread.

``compare(name, what, ours, theirs)`` is the one way a benchmark times our code against the reference: each side's
callable runs ``warmup`` times untimed (compilation, torch's first-call allocations), then ``repeats`` rounds time
one call of each, alternating which side goes first, so a drift of the machine (another process, thermal state)
reaches both. It prints one line, ``bench NAME WHAT: ours MEDIAN UNIT [MIN-MAX], torch MEDIAN UNIT [MIN-MAX], ratio
torch/ours R (median of N)``, and, when ``$SOVITS2_BENCH_JSONL`` names a file, appends the figures to it as one JSON
object (``bench.suite`` collects them into the table of ``make bench``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

JSONL_ENV = "SOVITS2_BENCH_JSONL"


@dataclasses.dataclass(frozen=True)
class Samples:
    """Timed calls of one side, in the unit reported."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self, unit: str) -> str:
        return f"{figure(self.median)} {unit} [{figure(min(self.values))}-{figure(max(self.values))}]"


def interleaved(
    sides: dict[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 5
) -> dict[str, tuple[float, ...]]:
    """Seconds per call of each side: ``warmup`` untimed calls each, then ``repeats`` rounds of one timed call per
    side, the order reversed every other round. Each callable must block until its result is ready."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in sides.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return {name: tuple(t) for name, t in times.items()}


def compare(
    name: str,
    what: str,
    ours: Callable[[], object],
    theirs: Callable[[], object],
    *,
    unit: str = "ms",
    scale: float = 1e3,
    warmup: int = 1,
    repeats: int = 5,
    extra: dict | None = None,
) -> str:
    """Times ``ours`` against ``theirs`` (the PyTorch reference) with ``interleaved`` and prints the line. ``scale``
    turns seconds per call into ``unit`` (1e3 for ms; 1 / seconds of audio for a real-time factor). ``extra``:
    more fields for the JSON record."""
    seconds = interleaved({"ours": ours, "torch": theirs}, warmup=warmup, repeats=repeats)
    mine = Samples(tuple(t * scale for t in seconds["ours"]))
    ref = Samples(tuple(t * scale for t in seconds["torch"]))
    return record(name, what, mine, ref, unit, extra)


def record(
    name: str, what: str, ours: Samples, torch: Samples, unit: str, extra: dict | None = None, *, note: str = ""
) -> str:
    """Prints (and appends to ``$SOVITS2_BENCH_JSONL``) the comparison of two sets of samples."""
    ratio = torch.median / ours.median
    line = (
        f"bench {name} {what}: ours {ours.text(unit)}, torch {torch.text(unit)}, ratio torch/ours {ratio:.2f} "
        f"({note or f'median of {len(ours.values)}'})"
    )
    print(line, flush=True)
    path = os.environ.get(JSONL_ENV)
    if path:
        row = dict(bench=name, what=what, unit=unit, ours=list(ours.values), torch=list(torch.values),
                   ours_median=ours.median, torch_median=torch.median, ratio=ratio, **(extra or {}))  # fmt: skip
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return line


def report(name: str, what: str, ours: float, torch: float, unit: str) -> str:
    """One measurement per side, for figures that cannot repeat cheaply (a whole corpus through a preparation
    stage): the line says ``(one run)`` so it is not read as a median."""
    return record(name, what, Samples((ours,)), Samples((torch,)), unit, note="one run")


def peak_rss_mib(fn: Callable[[], object]) -> float:
    """The process's peak resident memory (MiB) while ``fn`` runs: the kernel's high-water mark (``VmHWM``) reset to
    the current RSS first (``/proc/self/clear_refs``), so what ran before does not count; memory freed before the
    call is handed back to the kernel first (glibc keeps freed blocks: a dropped model stayed resident). Linux only."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: freed memory may still count
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        raise RuntimeError(f"peak RSS needs Linux's /proc/self/clear_refs ({e})") from None
    fn()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM line in /proc/self/status")


def scratch_dir(prefix: str) -> str:
    """A temporary directory removed when the process exits (the release-size model directories the benchmarks
    write are several GB each)."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _cores() -> int:
    """The cores this process may run on: what XLA's CPU client sizes its thread pool by."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_threads(threads: int = 0) -> int:
    """Gives torch's intra-op pool ``threads`` threads, or (0) as many as XLA's CPU client uses; returns the count."""
    import torch

    threads = threads or _cores()
    torch.set_num_threads(threads)
    return threads


def machine_line() -> str:
    """``machine: CPU model, N cores, jax / jaxlib / torch versions, threads per side``: printed first by every
    benchmark, so a figure is never read without the machine it came from."""
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    cores = _cores()
    threads = "?"
    try:
        import torch

        threads = str(torch.get_num_threads())
    except ImportError:
        pass
    return (
        f"machine: {cpu_model()}, {cores} cores, python {platform.python_version()}, jax {version('jax')}, "
        f"jaxlib {version('jaxlib')}, torch {version('torch')}; threads: XLA {cores}, torch {threads}"
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def figure(value: float) -> str:
    """One decimal, or three significant digits below 10 (RTFs are fractions of a second per second)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def table(rows: list[dict], machine: str, commit: str, date: str, quick: bool) -> str:
    """The markdown table of a run's figures."""
    size = "tiny sizes (--quick)" if quick else "default sizes"
    lines = [f"### `make bench`, {date}, commit {commit}, {size}", "", machine, "",
             "| benchmark | what | ours | torch | torch / ours |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ours, torch = _side(r, "ours"), _side(r, "torch")
        lines.append(f"| {r['bench']} | {r['what']} | {ours} | {torch} | {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def _side(row: dict, key: str) -> str:
    v = row[key]
    return f"{figure(row[f'{key}_median'])} [{figure(min(v))}-{figure(max(v))}] {row['unit']}"


def commit() -> str:
    """The short hash of HEAD, with ``+changes`` when tracked files differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
