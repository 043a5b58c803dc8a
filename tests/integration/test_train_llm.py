"""The trainer end to end on the tiny CosyVoice2 llm (real subprocesses, real signals, real Orbax / tensorboardX
files): it learns and evaluates; SIGKILL (mid-save) / SIGTERM / restart reproduce the uninterrupted run's losses
bit for bit; a checkpoint restores onto other meshes and device counts."""

import json
import signal

import pytest
import train_helpers as th

REF_STEPS = 8


@pytest.fixture(scope="module")
def reference(tiny_corpus, build_once):
    """One uninterrupted run of the tiny llm (once per session: ``build_once``): the losses every other run must
    reproduce."""

    def run(workdir):
        proc = th.run(workdir, th.llm_overrides(tiny_corpus))
        assert proc.returncode == 0, proc.stderr[-3000:]
        (workdir / "stderr.txt").write_text(proc.stderr)

    workdir = build_once("train_llm_reference", run)
    losses = th.losses(workdir)
    assert sorted(losses) == list(range(1, REF_STEPS + 1))
    return workdir, {step: values[0] for step, values in losses.items()}


def test_llm_learns_evaluates_checkpoints_and_logs(reference):
    workdir, losses = reference
    # random speech tokens: the model can only memorise the 24 training utterances, which it starts doing at once
    assert losses[REF_STEPS] < 0.9 * losses[1], losses
    records = th.read_metrics(workdir)
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [4, 8] and all(r["eval/loss"] > 0 for r in evals)
    assert all(r["train/skipped_steps"] == 0 for r in records if "train/loss" in r)
    # metrics.jsonl uses TensorBoard's names: every key but step and time is a train/ or eval/ scalar
    assert {k.split("/")[0] for r in records for k in r} == {"step", "time", "train", "eval"}
    times = [r["time"] for r in records]  # every row carries its wall time, in order
    assert times == sorted(times) and times[-1] - times[0] < 600 and times[0] > 1.7e9
    assert th.complete_steps(workdir) == [3, 6, 8]
    log = (workdir / "stderr.txt").read_text()
    # one start-up line (family, parameters, mesh, devices, processes, steps), one line per checkpoint
    summary = [line for line in log.splitlines() if "llm: parameters model " in line]
    assert len(summary) == 1 and "over 1 devices in 1 process(es); steps 1..8" in summary[0], log[-2000:]
    saves = [int(line.rsplit("/", 1)[1]) for line in log.splitlines() if "checkpoint: saving step" in line]
    assert saves == [3, 6, 8], log[-2000:]
    step_dir = workdir / "checkpoints" / "8"
    for item in ("params", "opt_state", "train_state", "data", "meta"):
        assert (step_dir / item).is_dir(), item
    meta = json.loads((step_dir / "meta" / "meta.json").read_text())
    assert (meta["family"], meta["player"], meta["step"], meta["part"]) == ("llm", "model", 8, "llm")
    state = json.loads((step_dir / "train_state" / "metadata").read_text())
    assert state["step"] == 8 and state["family"] == "llm" and state["accepted_steps"] == 8
    assert state["eval_loss"] == pytest.approx(evals[-1]["eval/loss"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/loss", "train/acc", "train/lr", "train/grad_norm", "train/skipped_steps", "train/step_time",
        "train/data_wait_fraction", "train/tokens_per_s", "train/mfu", "train/data_skipped_rows", "eval/loss",
        "eval/acc",
    }  # fmt: skip
    assert expected <= tags, expected - tags
    tb_loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert tb_loss == pytest.approx(losses, rel=1e-6)
    assert [e.step for e in events.Scalars("eval/loss")] == [4, 8]


def test_sigkill_mid_save_then_sigterm_resume_bit_identical(reference, tiny_corpus, tmp_path):
    _, expected = reference
    workdir = tmp_path / "run"
    args = th.llm_overrides(tiny_corpus)
    # 1) SIGKILL after the first checkpoint (3), while the save of step 6 is in flight
    proc = th.start(workdir, args, log=tmp_path / "run1.log")
    th.wait_for(lambda: 3 in th.complete_steps(workdir) and th.saving(workdir, 6), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert th.complete_steps(workdir) == [3], "the step-6 save must not have completed"
    # 2) restart: resumes from 3 (the half-written 6 is discarded); SIGTERM once it logged step 5
    logged = len(th.read_metrics(workdir))
    proc = th.start(workdir, args, log=tmp_path / "run2.log")
    th.wait_for(lambda: any(r["step"] >= 5 for r in th.read_metrics(workdir)[logged:]), proc, poll=0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    log2 = (tmp_path / "run2.log").read_text()
    assert "resumed from" in log2 and "checkpoints/3" in log2
    last = max(r["step"] for r in th.read_metrics(workdir)[logged:])
    assert th.complete_steps(workdir)[-1] == last  # saved on SIGTERM at the step it stopped at
    # 3) restart again to the end
    proc = th.run(workdir, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not th.saving(workdir, 6)
    got = th.losses(workdir)
    assert sorted(got) == list(range(1, REF_STEPS + 1))
    for step, values in got.items():  # every run that logged a step logged the reference's loss, exactly
        assert values == [expected[step]] * len(values), (step, values, expected[step])


def test_restore_onto_other_meshes_and_device_counts(reference, tiny_corpus, tmp_path):
    """Steps 1-2 on 8 devices as (data 2, fsdp 4), step 3 restored onto (8, 1), step 4 onto 4 devices.

    Each step on another mesh sums in another order; Adam turns such 1e-7 differences of small gradient entries
    into larger ones over steps (measured: 2e-4 after four steps on (8, 1) instead of one device), so the legs are
    kept short and every loss is held to 1e-5 of the one-device run's.
    """
    _, expected = reference
    workdir = tmp_path / "mesh"
    legs = [  # (devices, mesh, train to step)
        (8, {"mesh.data": 2, "mesh.fsdp": 4, "mesh.tensor": 1}, 2),
        (8, {"mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1}, 3),
        (4, {"mesh.data": -1, "mesh.fsdp": 1, "mesh.tensor": 1}, 4),
    ]
    for devices, mesh, steps in legs:
        overrides = th.llm_overrides(tiny_corpus, **mesh, **{"train.num_steps": steps, "train.eval_every": 0})
        proc = th.run(workdir, overrides, devices=devices)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert th.complete_steps(workdir)[-1] == steps
    got = {step: values[-1] for step, values in th.losses(workdir).items()}
    assert sorted(got) == [1, 2, 3, 4]
    for step in got:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), (step, got[step], expected[step])
