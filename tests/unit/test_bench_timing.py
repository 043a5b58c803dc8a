"""The benchmark harness: warm-ups are not timed, the sides alternate who goes first, the line carries median and
spread per side and the ratio of medians, the JSONL record holds every sample, and ``make bench``'s table holds it."""

from __future__ import annotations

import json

import pytest

from sovits2_jax.bench import timing


class FakeClock:
    """perf_counter advanced only by the fake work, so every duration is exact."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


def test_warmups_are_untimed_and_rounds_alternate(clock):
    calls = []

    def side(name, costs):
        it = iter(costs)

        def run():
            calls.append(name)
            clock.now += next(it)

        return run

    # the first call of each side is its warm-up (100 s: a compile) and must not show in the samples
    out = timing.interleaved({"a": side("a", [100, 1, 2, 3, 4]), "b": side("b", [100, 5, 6, 7, 8])}, repeats=4)
    assert out == {"a": (1, 2, 3, 4), "b": (5, 6, 7, 8)}
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved({"a": lambda: None}, repeats=0)


def test_compare_prints_medians_spread_ratio_and_records_every_sample(clock, tmp_path, monkeypatch, capsys):
    costs = {"ours": iter([9, 0.1, 0.3, 0.2]), "torch": iter([9, 0.4, 0.8, 0.6])}

    def run(name):
        def f():
            clock.now += next(costs[name])

        return f

    jsonl = tmp_path / "figures.jsonl"
    monkeypatch.setenv(timing.JSONL_ENV, str(jsonl))
    line = timing.compare("demo", "step", run("ours"), run("torch"), repeats=3, extra={"note": "x"})
    assert line == capsys.readouterr().out.strip()
    assert line == ("bench demo step: ours 200.0 ms [100.0-300.0], torch 600.0 ms [400.0-800.0], ratio torch/ours 3.00 "
                    "(median of 3)")  # fmt: skip
    (row,) = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert row["ours"] == pytest.approx([100, 300, 200]) and row["torch"] == pytest.approx([400, 800, 600])
    assert row["ratio"] == pytest.approx(3.0) and row["unit"] == "ms" and row["note"] == "x"


def test_rtf_scale_and_one_run_figures(clock, capsys):
    def work(seconds):
        def f():
            clock.now += seconds

        return f

    line = timing.compare("x", "RTF", work(2.0), work(5.0), unit="s/s", scale=1 / 4.0, warmup=0, repeats=1)
    assert "ours 0.5 s/s [0.5-0.5], torch 1.25 s/s [1.25-1.25], ratio torch/ours 2.50" in line
    once = timing.report("x", "stage", 10.0, 30.0, "ms/utt")
    assert once.endswith("ratio torch/ours 3.00 (one run)") and "median" not in once
    capsys.readouterr()


def test_machine_line_names_the_cpu_cores_and_versions():
    line = timing.machine_line()
    assert line.startswith("machine: ") and " cores" in line and "jax " in line and "torch " in line


def test_suite_table_has_one_row_per_figure():
    rows = [dict(bench="infer", what="RTF batch 1", unit="s/s", ours=[1.0, 2.0, 3.0], torch=[4.0, 5.0, 6.0],
                 ours_median=2.0, torch_median=5.0, ratio=2.5)]  # fmt: skip
    text = timing.table(rows, "machine: X", "abc123", "2026-12-07", quick=False)
    assert "commit abc123" in text and "2026-12-07" in text and "machine: X" in text
    assert "| infer | RTF batch 1 | 2 [1-3] s/s | 5 [4-6] s/s | 2.50 |" in text


def test_peak_rss_counts_only_what_runs_inside_the_call():
    import numpy as np

    from sovits2_jax.bench.timing import peak_rss_mib

    big = peak_rss_mib(lambda: np.ones(25_000_000).sum())  # 190 MiB touched, then freed
    after = peak_rss_mib(lambda: None)  # the high-water mark was reset: the earlier 190 MiB do not count
    assert big - after > 150, (big, after)
