"""``launch/recipes/builtin.sh`` end to end as `make demo` runs it (tiny settings) on a smaller corpus, in a real
subprocess: espeak corpus -> stages 0-3 -> llm, flow and hift trained one step each, at once (--parallel_train;
every step of the loop: eval, checkpoint) -> average -> export -> zero-shot synthesis of held-out dev sentences ->
offline evaluation -> report.json / report.md / PNGs. Plus the prompt pairing of the synthesis, in process."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import train_helpers

from sovits2_jax.demo.pairs import plan_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pairs_prompt_each_utterance_with_other_utterances_of_its_speaker():
    rows = {f"{s}_{i}": {"spk": s} for s in ("a", "b", "c") for i in range(4 if s != "c" else 1)}
    pairs, alone = plan_pairs(rows, references=2)
    assert alone == ["c"]  # a single utterance has no other to be prompted by
    assert sorted(p.utt for p in pairs) == sorted(u for u in rows if not u.startswith("c"))
    for p in pairs:
        assert len(p.prompts) == 2 and p.utt not in p.prompts
        assert all(rows[u]["spk"] == p.speaker == rows[p.utt]["spk"] for u in p.prompts)
    assert [p.speaker for p in pairs[:4]] == ["a", "b", "a", "b"]  # round-robin over the speakers
    assert [p.utt for p in plan_pairs(rows, num=2)[0]] == ["a_0", "b_0"]


def test_builtin_recipe_end_to_end_writes_a_report_with_every_metric(tmp_path):
    work = tmp_path / "demo"
    cmd = ["bash", os.path.join(ROOT, "launch/recipes/builtin.sh"), "--size", "tiny", "--work", str(work),
           "--speakers", "2", "--hours", "0.004", "--codebook_size", "8", "--num_steps", "1", "--num_utts", "2",
           "--num_workers", "1", "--parallel_train", "--vocoder_check", "0", "--ladder", "1"]  # fmt: skip
    cmd += ["--set", "hift.train.eval_batches=1"]  # `make demo`'s tiny settings otherwise, on a smaller corpus
    # one CPU device as a user has; every stage compiles much and steps little: XLA:CPU backend optimisation off
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu", XLA_FLAGS=train_helpers.FAST_COMPILE)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    report = json.loads((work / "report.json").read_text())
    stages = ("corpus", "prepare", "train_llm", "train_flow", "train_hift", "average", "export", "synthesize",
              "evaluate", "ladder", "calibration", "evaluate_ladder", "report")  # fmt: skip
    assert list(report["stage_times"]) == list(stages)
    assert all(math.isfinite(t) and t > 0 for t in report["stage_times"].values())
    # the three parts trained at once: the total counts their longest, not their sum
    assert report["parallel_stages"] == ["train_llm", "train_flow", "train_hift"]
    times = report["stage_times"]
    longest = max(times[s] for s in report["parallel_stages"])
    assert report["total_seconds"] == pytest.approx(sum(times.values()) - sum(times[s] for s in stages[2:5]) + longest,
                                                    abs=0.1)  # fmt: skip
    for stage in stages[:-1]:  # the shell printed each stage's time (the report's own is measured inside)
        assert f"stage {stage}: " in out.stdout
    metrics = report["metrics"]
    assert set(metrics) == {"mcd", "similarity", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "wer"}
    for name, stat in metrics.items():
        assert stat["count"] == 2 and math.isfinite(stat["mean"]), (name, stat)
    assert metrics["mcd"]["mean"] > 0 and -1 <= metrics["similarity"]["mean"] <= 1
    assert set(report["training"]) == {"llm", "flow", "hift"}
    for part, t in report["training"].items():
        assert t["steps"] == 1, part
        assert all(math.isfinite(t[k]) for k in ("first_loss", "final_loss", "final_eval_loss")), (part, t)

    from sovits2_jax.audio.io import load_audio

    wav_dir = work / "synthesis"
    utts = sorted(n[:-4] for n in os.listdir(wav_dir) if n.endswith(".wav") and n.count(".") == 1)
    assert len(utts) == 2 and len({u.split("_")[0] for u in utts}) == 2  # one per speaker
    for utt in utts:
        for suffix in (".wav", ".prompt.wav", ".ref.wav"):
            wav, sr = load_audio(str(wav_dir / f"{utt}{suffix}"))
            assert sr == 24000 and len(wav) > sr // 10 and np.sqrt(np.mean(wav**2)) > 1e-3, (utt, suffix)
        assert (wav_dir / f"{utt}.txt").read_text().strip()
    # the ground truth is the dev utterance's own recording, the prompt another utterance of its speaker
    pairs = {line.split("\t")[0]: line.split("\t")[2] for line in (wav_dir / "pairs.tsv").read_text().splitlines()[1:]}
    assert all(pairs[u] != u and pairs[u].split("_")[0] == u.split("_")[0] for u in utts)

    # the quality ladder: every rung and calibration row scored on both utterances
    rungs = {r["key"]: r["scores"] for r in report["ladder"]["rungs"]}
    assert list(rungs) == ["resynthesis", "resynthesis_gl", "lm", "tts"]  # no vocoder check here
    for key in ("resynthesis", "resynthesis_gl", "tts"):
        assert rungs[key]["count"] == 2 and math.isfinite(rungs[key]["mcd"]) and rungs[key]["duration_ratio"] > 0
    lm = rungs["lm"]
    assert lm["count"] == 2 and lm["token_error"] >= 0 and math.isfinite(lm["teacher_forced_acc"])
    assert math.isfinite(rungs["resynthesis"]["flow_mel_mcd"])
    ladder = json.loads((work / "ladder" / "ladder.json").read_text())
    # resynthesis re-tokenises the ground truth with the export's tokenizer: the very tokens the data carries
    assert ladder["tokens_match_data"] is True and ladder["utterances"] == 2
    rows = {c["key"]: c["scores"] for c in report["ladder"]["calibration"]}
    assert set(rows) == {"espeak", "griffin_lim", "other_text", "other_voice", "noise"}
    assert all(s["count"] == 2 for s in rows.values())
    # noise is the worst by MCD; espeak reading the same text again beats another text in the same voice
    assert rows["noise"]["mcd"] > max(rows[k]["mcd"] for k in ("espeak", "griffin_lim", "other_text")), rows
    assert rows["espeak"]["mcd"] < rows["other_text"]["mcd"], rows
    assert "## Quality ladder" in (work / "report.md").read_text()

    pngs = [*report["plots"]["curves"].values(), *report["plots"]["mels"].values()]
    assert len(report["plots"]["curves"]) == 3 and len(report["plots"]["mels"]) == 4  # synthesis + resynthesis
    for png in pngs:
        with open(png, "rb") as f:
            assert f.read(8) == PNG_MAGIC, png
        import matplotlib.image

        assert matplotlib.image.imread(png).shape[0] > 100, png
    md = (work / "report.md").read_text()
    for png in pngs:
        assert os.path.relpath(png, work) in md
    assert all(f"| {u} |" in md for u in utts)


def test_parallel_training_names_the_part_that_failed_and_stops(tmp_path):
    """--parallel_train: a part whose trainer exits non-zero is named with the end of its log, and nothing after
    training runs (no average, export or synthesis)."""
    work = tmp_path / "w"
    for split in ("train", "dev"):
        (work / "data" / split / "parquet").mkdir(parents=True)
        (work / "data" / split / "parquet" / "data.list").write_text(str(tmp_path / "missing.parquet") + "\n")
    cmd = ["bash", os.path.join(ROOT, "launch/recipes/builtin.sh"), "--size", "tiny", "--work", str(work),
           "--skip_prep", "--parallel_train", "--set", "flow.train.no_such_key=1"]  # fmt: skip
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "builtin.sh: training flow failed" in out.stderr
    assert "no_such_key" in out.stderr  # the trainer's own one-line reason, from the end of its log
    assert (work / "exp" / "train_flow.log").is_file()
    assert "stage average" not in out.stdout and not (work / "CosyVoice2").exists()
