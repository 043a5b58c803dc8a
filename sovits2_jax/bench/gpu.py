"""The GPU suite's driver: every parity component on the device, then the headline benchmarks, one JSON.

    python -m sovits2_jax.bench.gpu --device=gpu --size=release --out=out/gpu_suite/gpu_suite.json
    python -m sovits2_jax.bench.gpu --device=cpu --size=small      # the same code at a small size (suite.sh --cpu)

Parts: parity (fp32 asserted at docs/architecture.md's tolerances, bf16 reported) for every component; the ``qwen2``
family training through the real trainer (tokens/s and MFU from its metrics.jsonl; bf16 on a GPU); the train-step,
speech-LM decode and TTS benchmarks (each printing ratios against the PyTorch reference measured in the same run). Every
benchmark runs in its own process so one failure is recorded and the rest still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

from sovits2_jax import cli
from sovits2_jax.train.metrics import read_metrics

_DEVICE = flags.DEFINE_enum("device", "gpu", ["gpu", "cpu"], "where both sides run")
_SIZE = flags.DEFINE_enum("size", "release", ["release", "small"], "release shapes (GPU) or a small CPU check")
_OUT = flags.DEFINE_string("out", "out/gpu_suite/gpu_suite.json", "results JSON")
_PARTS = flags.DEFINE_list("parts", ["parity", "train_qwen2", "train_step", "decode", "tts"], "what to run")

ROOT = Path(__file__).resolve().parents[2]


def parity_results(device: str) -> list[dict]:
    """Every component at fp32 (asserted) and, where its case supports it, bf16 (reported)."""
    from sovits2_jax import parity
    from sovits2_jax.parity.registry import COMPONENTS, dtypes

    rows = []
    for component in sorted(COMPONENTS):
        for dtype in dtypes(component):
            t0 = time.perf_counter()
            try:
                report = parity.run(component, None, device=device, dtype=dtype, report_path=None)
                print(parity.format_report(report), flush=True)
                worst = max((o.get("max_abs", float("inf")) for o in report["outputs"].values()), default=0.0)
                rows.append(dict(component=component, dtype=dtype, ok=report["ok"], max_abs=worst,
                                 asserted=report["asserted"], seconds=time.perf_counter() - t0))  # fmt: skip
            except Exception as e:  # one broken component must not hide the others
                print(f"parity {component} {dtype}: error {type(e).__name__}: {e}", flush=True)
                rows.append(dict(component=component, dtype=dtype, ok=False, error=f"{type(e).__name__}: {e}"))
    return rows


def _run(args: list[str], timeout: float) -> dict:
    """Runs one benchmark module (it inherits ``$SOVITS2_BENCH_JSONL``, set by main, and appends its figures there);
    returns its exit code and the ``bench ...`` lines it printed."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text, code = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as e:
        text, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
    lines = [line for line in text.splitlines() if line.startswith(("bench ", "# "))]
    for line in lines:
        print(line, flush=True)
    if code:
        print(f"{args[0]}: exit {code}: {text.strip().splitlines()[-1:] if text.strip() else ''}", flush=True)
    return dict(command=" ".join(args), exit=code, lines=lines, seconds=time.perf_counter() - t0)


def train_qwen2(device: str, size: str) -> dict:
    """The qwen2 family through the trainer: the logged tokens/s and MFU of its last steps."""
    preset, steps = ("0.5b", 30) if size == "release" else ("tiny", 8)
    with tempfile.TemporaryDirectory() as workdir:
        args = ["sovits2_jax.train", f"--config=configs/qwen2.py:{preset}", f"--workdir={workdir}",
                f"--config.train.num_steps={steps}", "--config.train.log_every=5", "--config.train.eval_every=0",
                f"--config.train.checkpoint_every={steps * 10}",
                f"--config.train.dtype={'bfloat16' if device == 'gpu' else 'float32'}"]  # fmt: skip
        result = _run(args, timeout=900)
        records = read_metrics(Path(workdir) / "metrics.jsonl")
    last = records[-1] if records else {}
    keys = ("step", "loss", "tokens_per_s", "mfu", "step_time")
    result["metrics"] = {k: last.get(k if k == "step" else f"train/{k}") for k in keys}
    print(f"bench gpu qwen2 train ({preset}, {device}): "
          + ", ".join(f"{k} {result['metrics'][k]}" for k in keys[2:]))  # fmt: skip
    return result


def _write_table(figures: Path, device: str, size: str) -> None:
    """The benchmarks' figures as ``make bench``'s table (median [range] per side, ratio), beside the JSON."""
    from sovits2_jax.bench.timing import commit, machine_line, table

    rows = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]
    if not rows:
        return
    machine = machine_line()
    if device == "gpu":
        import jax

        machine += f"; device: {jax.devices()[0].device_kind}"
    text = table(rows, machine, commit(), time.strftime("%Y-%m-%d"), quick=size != "release")
    figures.with_suffix(".md").write_text(text)
    print(text, flush=True)


def main(argv) -> int:
    device, size = _DEVICE.value, _SIZE.value
    results: dict = dict(device=device, size=size, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if device == "gpu":
        import jax

        results["device_kind"] = jax.devices()[0].device_kind
    parts = set(_PARTS.value)
    from sovits2_jax.bench.timing import JSONL_ENV

    figures = Path(_OUT.value).with_suffix(".figures.jsonl")
    figures.parent.mkdir(parents=True, exist_ok=True)
    figures.write_text("")
    os.environ[JSONL_ENV] = str(figures)  # the benchmark subprocesses record their figures there
    if "parity" in parts:
        results["parity"] = parity_results(device)
    if "train_qwen2" in parts:
        results["train_qwen2"] = train_qwen2(device, size)
    release = size == "release"
    if "train_step" in parts:
        args = ["sovits2_jax.bench.train", f"--size={'real' if release else 'tiny'}", f"--batch={8 if release else 2}",
                f"--tokens={200 if release else 50}"]  # fmt: skip
        results["train_step"] = _run(args, 900)
    if "decode" in parts:
        results["decode"] = _run(["sovits2_jax.bench.speech_lm", "--batches=1,16", f"--new={256 if release else 32}"],
                                 900)  # fmt: skip
    if "tts" in parts:
        # --nomemory: its peak-RSS children measure host memory, not the device's, and would double the time
        results["tts"] = _run(["sovits2_jax.bench.infer", f"--size={'release' if release else 'tiny'}",
                               f"--batch={16 if release else 8}", "--nomemory"], 900)  # fmt: skip
    Path(_OUT.value).write_text(json.dumps(results, indent=2, default=str))
    _write_table(figures, device, size)
    failed = [r["component"] + ":" + r["dtype"] for r in results.get("parity", []) if not r["ok"]]
    failed += [k for k in ("train_qwen2", "train_step", "decode", "tts") if results.get(k, {}).get("exit")]
    print(f"gpu suite ({device}, {size}): {'all ok' if not failed else 'failed: ' + ', '.join(failed)}; "
          f"results in {os.path.abspath(_OUT.value)}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
