"""``make bench``: runs the benchmarks that compare ours with the PyTorch reference, each in its own process, and
writes one dated table of their figures (median [min-max] per side, ratio of medians) with the machine and commit.

python -m sovits2_jax.bench.suite [--only=infer,train] [--out=out/bench] [--quick]

Each benchmark appends its figures to a JSONL file (``bench.timing.compare``); the table goes to
``OUT/<date>-<commit>.md`` and to stdout, for docs/benchmarks.md. ``--quick`` runs the tiny sizes (a check that
every benchmark runs, in minutes; its figures say little about release sizes). A benchmark that fails is named
with the end of its output and the others still run; the command then exits 1.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import flags

from sovits2_jax import cli

# (module, its arguments at the defaults, its arguments with --quick)
BENCHMARKS = (
    ("infer", [], ["--size=tiny", "--repeats=3"]),
    ("infer_stages", [], ["--size=tiny", "--repeats=3"]),
    ("train", ["--qwen2_steps=0"], ["--qwen2_steps=0", "--repeats=3"]),
    ("speech_lm", [], ["--config=configs/qwen2.py:tiny", "--batches=1", "--new=40", "--repeats=3"]),
    ("flow", [], ["--size=tiny", "--repeats=3"]),
    ("hift", [], ["--frames=100", "--skip_gan", "--repeats=3"]),
    ("vits", [], ["--seconds=2", "--repeats=3"]),
    ("qwen2", [], ["--config=configs/qwen2.py:tiny", "--repeats=3"]),
    ("hubert", [], ["--preset=tiny", "--seconds=2", "--repeats=3"]),
    ("xlm_roberta", [], ["--size=tiny", "--repeats=3"]),
)
NAMES = [name for name, _, _ in BENCHMARKS]

_ONLY = flags.DEFINE_list("only", [], f"benchmarks to run (default: all of {','.join(NAMES)})")
_OUT = flags.DEFINE_string("out", "out/bench", "directory for the table")
_QUICK = flags.DEFINE_bool("quick", False, "tiny sizes: every benchmark runs, in minutes")


def run_one(name: str, args: list[str], jsonl: Path) -> tuple[bool, str]:
    """Runs ``python -m sovits2_jax.bench.NAME ARGS`` with its figures going to ``jsonl``; (ok, its output)."""
    from sovits2_jax.bench.timing import JSONL_ENV

    env = dict(os.environ, **{JSONL_ENV: str(jsonl)})
    proc = subprocess.run([sys.executable, "-m", f"sovits2_jax.bench.{name}", *args], env=env, capture_output=True,
                          text=True)  # fmt: skip
    out = proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith(("bench ", "machine:", "# ")):
            print(f"  {line}", flush=True)
    return proc.returncode == 0, out


def main(argv) -> int:
    del argv
    from sovits2_jax.bench.timing import commit, machine_line, table

    unknown = sorted(set(_ONLY.value) - set(NAMES))
    if unknown:
        raise cli.Error(f"--only: no benchmark named {', '.join(unknown)} (known: {', '.join(NAMES)})")
    chosen = [b for b in BENCHMARKS if not _ONLY.value or b[0] in _ONLY.value]
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        jsonl = Path(tmp) / "figures.jsonl"
        jsonl.touch()
        for name, args, quick_args in chosen:
            print(f"bench.suite: {name}", flush=True)
            ok, out = run_one(name, quick_args if _QUICK.value else args, jsonl)
            if not ok:
                failed.append(name)
                tail = "\n".join(out.strip().splitlines()[-5:])
                print(f"bench.suite: {name} failed:\n{tail}", file=sys.stderr, flush=True)
        rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    date, head = datetime.date.today().isoformat(), commit()
    text = table(rows, machine_line(), head, date, _QUICK.value)
    out_dir = Path(_OUT.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{date}-{head}{'-quick' if _QUICK.value else ''}.md"
    path.write_text(text)
    print(text, flush=True)
    print(f"bench.suite: {len(rows)} figures from {len(chosen) - len(failed)} of {len(chosen)} benchmarks -> {path}")
    if failed:
        print(f"bench.suite: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
