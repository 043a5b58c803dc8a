"""The multi-host training command of docs/cluster.md, run as written (2 processes x 4 CPU devices) with only its
paths swapped for the test's and the step count cut: the tiny preset must follow the mesh with no hand-set
``data.batch_multiple`` or ``data.num_shards``."""

import json
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_command(doc: Path, start: str) -> list[str]:
    """The shell command in ``doc`` whose first line starts with ``start`` (with its ``\\`` continuation lines)."""
    lines = doc.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    text = ""
    for line in lines[first:]:
        text += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            break
    return shlex.split(text)


def test_the_documented_local_multihost_command_trains(tiny_corpus, tmp_path):
    cmd = documented_command(ROOT / "docs" / "cluster.md", "launch/local.sh -n 2 --devices_per_process 4")
    workdir = tmp_path / "llm_tiny"
    swaps = {"--workdir=exp/llm_tiny": f"--workdir={workdir}",
             "--config.data.train_list=exp/libritts/data/train/data.list":
                 f"--config.data.train_list={tiny_corpus.train_list}"}  # fmt: skip
    assert set(swaps) <= set(cmd), cmd  # the docs still show these arguments
    cmd = [swaps.get(arg, arg) for arg in cmd] + ["--config.train.num_steps=3", "--config.train.eval_every=0"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "train/loss" in r][-1] == 3
