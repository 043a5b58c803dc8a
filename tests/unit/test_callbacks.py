"""The training loop's hooks (sovits2_jax/train/callbacks.py) without a model: each fires at exactly its cadence,
the checkpointer saves the steps it must (and a final one only when the last step was unsaved), the metrics record
of a step holds its interval summary and its eval scalars, eval time stays out of step_time, and the profiler
traces steps first..last. ``drive`` is the trainer's loop with the batch fetch and the step faked."""

from __future__ import annotations

import json
import logging
import os
import signal
from types import SimpleNamespace

import jax
import pytest

from sovits2_jax.train import callbacks
from sovits2_jax.train.callbacks import StepInfo


class Clock:
    """A fake time.perf_counter: only the fake steps and the fake eval move it."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks, "time", clock)
    return clock


def fake_state(step):
    return SimpleNamespace(
        accepted=step, params=("params", step), opt_state=("opt_state", step), buffers={"model": ("buffers", step)}
    )


def drive(hooks, num_steps, *, start=0, data_steps=None, clock=None, step_seconds=1.0, wait=0.25) -> StepInfo:
    """The trainer's loop: ``data_steps`` batches in all (None: endless); each step takes ``step_seconds`` on
    ``clock`` of which ``wait`` is data wait; the metrics of step s have loss s."""
    hooks = callbacks.Hooks(hooks)
    info = StepInfo(start, fake_state(start))
    try:
        while info.step < num_steps:
            hooks.before_step(info)
            if data_steps is not None and info.step >= data_steps:
                break  # the data ended
            info.data_state = {"position": info.step + 1}
            if clock is not None:
                clock.now += step_seconds
            s = info.step + 1
            metrics = {"loss": float(s), "tokens": 10.0, "skipped_steps": 0.0, "skipped": 0.0}
            info.advance(fake_state(s), metrics, wait)
            hooks.after_step(info)
            if info.stop:
                break
        hooks.on_end(info)
    finally:
        hooks.close()
    return info


# ------------------------------------------------------------------------------------------------ fakes


class FakeManager:
    directory = "wd/checkpoints"

    def __init__(self):
        self.saves, self.waits = [], 0

    def save(self, step, params, opt_state, counters, batches, meta, eval_loss=None, buffers=None):
        self.saves.append(dict(step=step, params=params, opt_state=opt_state, counters=counters,
                               data=batches.state, meta=meta, eval_loss=eval_loss, buffers=buffers))  # fmt: skip

    def wait(self):
        self.waits += 1

    def check(self):
        pass


class FakeNotice:
    def __init__(self, at=None):
        self.at, self.asked, self.closed = at, [], False

    def __call__(self, step):
        self.asked.append(step)
        return step == self.at

    def close(self):
        self.closed = True


def contents(step, state, eval_loss):
    return {"step": step, "eval_loss": eval_loss}, {"step": step}


def checkpointer(manager, every, num_steps, start=None):
    return callbacks.Checkpointer(manager, every, num_steps, contents, last_saved=start)


class FakeWriter:
    def __init__(self):
        self.records, self.advanced, self.closed = [], [], False

    def write(self, step, train=None, eval=None):
        self.records.append((step, train, eval))

    def advance(self, step):
        self.advanced.append(step)

    def close(self):
        self.closed = True


def logger(writer, every, num_steps, schedules=None, skipped=lambda: 7):
    schedules = {"model": lambda count: 0.5 * count} if schedules is None else schedules
    return callbacks.MetricsLogger(writer, every, num_steps, schedules, peak=0.0, skipped_rows=skipped)


def evaluator(every, num_steps, clock=None, seconds=100.0, calls=None):
    def evaluate(state):
        if calls is not None:
            calls.append(state.params)
        if clock is not None:
            clock.now += seconds
        return {"loss": 1.0 / state.params[1], "acc": 0.5}

    return callbacks.Evaluator(evaluate, every, num_steps)


# ------------------------------------------------------------------------------------------------ cadence


def test_due_fires_at_multiples_and_the_last_step_and_never_when_off():
    assert [s for s in range(1, 11) if callbacks.due(s, 3, 10)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if callbacks.due(s, 5, 10)] == [5, 10]
    assert not any(callbacks.due(s, 0, 10) for s in range(1, 11))


def test_hooks_run_every_after_step_before_any_end_step_and_close_in_reverse():
    calls = []

    class Recorder(callbacks.Hook):
        def __init__(self, name):
            self.name = name

        def before_step(self, info):
            calls.append(("before", self.name, info.step))

        def after_step(self, info):
            calls.append(("after", self.name, info.step))

        def end_step(self, info):
            calls.append(("end", self.name, info.step))

        def on_end(self, info):
            calls.append(("on_end", self.name, info.step))

        def close(self):
            calls.append(("close", self.name))

    drive([Recorder("a"), Recorder("b")], num_steps=1)
    assert calls == [
        ("before", "a", 0), ("before", "b", 0), ("after", "a", 1), ("after", "b", 1), ("end", "a", 1),
        ("end", "b", 1), ("on_end", "a", 1), ("on_end", "b", 1), ("close", "b"), ("close", "a"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------------ checkpoints


def saved(manager):
    return [s["step"] for s in manager.saves]


def test_checkpointer_saves_multiples_and_the_last_step_once():
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=10)
    info = drive([callbacks.Preemption(FakeNotice()), ckpt], num_steps=10)
    assert info.step == 10 and not info.stop
    assert saved(manager) == [3, 6, 9, 10]  # no second save of 10 at the end
    assert manager.waits == 1
    last = manager.saves[-1]
    assert last["params"] == ("params", 10) and last["opt_state"] == ("opt_state", 10)
    assert last["buffers"] == {"model": ("buffers", 10)}
    assert last["data"] == {"position": 10}
    assert last["counters"] == {"step": 10, "eval_loss": None} and last["meta"] == {"step": 10}


def test_checkpointer_saves_the_preempted_step_and_stops_the_loop(caplog):
    manager, notice = FakeManager(), FakeNotice(at=5)
    ckpt = checkpointer(manager, every=3, num_steps=10)
    at_end = []

    class AtEnd(callbacks.Hook):
        def on_end(self, info):
            at_end.extend(saved(manager))

    with caplog.at_level(logging.WARNING, logger="sovits2_jax.train"):
        info = drive([callbacks.Preemption(notice), AtEnd(), ckpt], num_steps=10)
    assert info.stop and info.step == 5
    assert at_end == [3, 5]  # saved at the step itself, before the loop ended (not by the final save)
    assert notice.asked == [1, 2, 3, 4, 5]  # every step, on every process (a collective when multi-process)
    assert saved(manager) == [3, 5]
    assert manager.saves[-1]["data"] == {"position": 5}
    assert "SIGTERM: saved step 5, exiting" in caplog.text
    assert notice.closed


def test_checkpointer_preempted_on_a_cadence_step_saves_it_once():
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=10)
    info = drive([callbacks.Preemption(FakeNotice(at=6)), ckpt], num_steps=10)
    assert info.stop and saved(manager) == [3, 6]


@pytest.mark.parametrize(("data_steps", "expected"), [(7, [3, 6, 7]), (6, [3, 6]), (0, [])])
def test_checkpointer_final_save_only_when_the_data_ended_on_an_unsaved_step(data_steps, expected):
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=10)
    info = drive([callbacks.Preemption(FakeNotice()), ckpt], num_steps=10, data_steps=data_steps)
    assert info.step == data_steps and not info.stop
    assert saved(manager) == expected
    assert manager.waits == 1


def test_checkpointer_resumed_run_that_gets_no_batch_saves_nothing():
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=10, start=6)
    drive([ckpt], num_steps=10, start=6, data_steps=6)
    assert saved(manager) == [] and manager.waits == 1


def test_checkpoints_carry_the_eval_loss_of_their_own_step_only():
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=8)
    drive([evaluator(4, 8), callbacks.Preemption(FakeNotice()), ckpt], num_steps=8, data_steps=8)
    assert {s["step"]: s["eval_loss"] for s in manager.saves} == {3: None, 6: None, 8: 1 / 8}
    assert manager.saves[-1]["counters"]["eval_loss"] == 1 / 8
    # the data ends after eval step 4: the final save keeps that step's eval loss
    manager = FakeManager()
    ckpt = checkpointer(manager, every=3, num_steps=8)
    drive([evaluator(4, 8), callbacks.Preemption(FakeNotice()), ckpt], num_steps=8, data_steps=4)
    assert {s["step"]: s["eval_loss"] for s in manager.saves} == {3: None, 4: 1 / 4}


# ------------------------------------------------------------------------------------------------ metrics


def test_logger_writes_at_log_every_multiples_and_the_last_step(clock):
    writer = FakeWriter()
    drive([logger(writer, 4, 10)], num_steps=10, clock=clock)
    assert [r[0] for r in writer.records] == [4, 8, 10]
    assert writer.advanced == list(range(1, 11))
    assert all(ev is None for _, _, ev in writer.records)
    losses = [train["loss"] for _, train, _ in writer.records]
    assert losses == [2.5, 6.5, 9.5]  # the mean over each interval: 1..4, 5..8, 9..10
    for _, train, _ in writer.records:
        assert train["step_time"] == pytest.approx(1.0)
        assert train["data_wait_fraction"] == pytest.approx(0.25)
        assert train["tokens_per_s"] == pytest.approx(10.0)
        assert train["data_skipped_rows"] == 7.0 and train["skipped_steps"] == 0.0
        assert "skipped" not in train and "tokens" not in train
    assert [train["lr"] for _, train, _ in writer.records] == [1.5, 3.5, 4.5]  # schedule(accepted - 1)
    assert writer.closed


def test_a_frame_counting_family_logs_frames_per_s(clock):
    writer = FakeWriter()
    hook = callbacks.MetricsLogger(writer, 5, 5, {"model": lambda c: 0.0}, peak=0.0, skipped_rows=lambda: 0,
                                   unit="frames")  # fmt: skip
    drive([hook], num_steps=5, clock=clock)
    (_, train, _), = writer.records
    assert train["frames_per_s"] == pytest.approx(10.0) and "tokens_per_s" not in train


def test_metrics_jsonl_uses_tensorboard_names_and_reads_older_runs(tmp_path):
    from sovits2_jax.train.metrics import MetricsWriter, read_metrics

    writer = MetricsWriter(str(tmp_path), num_steps=2)
    writer.write(1, train={"loss": 2.0, "generator/lr": 0.1})
    writer.write(2, train={"loss": 1.0}, eval={"loss": 1.5, "acc": 0.5})
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows] == [["step", "time", "train/generator/lr", "train/loss"],
                                         ["eval/acc", "eval/loss", "step", "time", "train/loss"]]  # fmt: skip
    assert read_metrics(tmp_path / "metrics.jsonl") == rows
    # a run written before the names changed (and a line cut short by a kill) reads under today's names
    old = tmp_path / "old.jsonl"
    old.write_text('{"step": 4, "time": 1.0, "loss": 3.0, "generator/lr": 0.1, "eval_loss": 2.5}\n{"step": 5, "lo')
    assert read_metrics(old) == [{"step": 4, "time": 1.0, "train/loss": 3.0, "train/generator/lr": 0.1,
                                  "eval/loss": 2.5}]  # fmt: skip
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_tensorboard_gets_the_config_as_text_and_hparams(tmp_path):
    import ml_collections
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from sovits2_jax.train.metrics import MetricsWriter

    config = ml_collections.ConfigDict({"family": "llm", "train": {"num_steps": 7, "optimizer": {"lr": 0.5}},
                                        "data": {"bucket_lengths": (10, 20)}})  # fmt: skip
    writer = MetricsWriter(str(tmp_path), num_steps=7, config=config)
    writer.write(1, train={"loss": 2.0})
    writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("config/text_summary")
    assert '"lr": 0.5' in text.tensor_proto.string_val[0].decode()
    plugin = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = {k: v.ListFields()[0][1] for k, v in start.session_start_info.hparams.items()}
    assert hparams == {"family": "llm", "train.num_steps": 7, "train.optimizer.lr": 0.5,
                       "data.bucket_lengths": "(10, 20)"}  # fmt: skip
    resumed = MetricsWriter(str(tmp_path / "again"), num_steps=7, start_step=3, config=config)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "again" / "tensorboard"))
    events.Reload()
    assert not events.Tags()["tensors"]  # a resumed run does not write them again


def test_logger_names_each_players_lr_when_there_are_several(clock):
    writer = FakeWriter()
    schedules = {"generator": lambda n: 1.0, "discriminator": lambda n: 2.0}
    drive([logger(writer, 2, 2, schedules=schedules)], num_steps=2, clock=clock)
    (_, train, _), = writer.records  # fmt: skip
    assert (train["generator/lr"], train["discriminator/lr"]) == (1.0, 2.0) and "lr" not in train


def test_eval_steps_share_the_logged_record_and_eval_time_is_not_step_time(clock):
    writer, calls = FakeWriter(), []
    hooks = [logger(writer, 4, 10), evaluator(3, 10, clock=clock, seconds=100.0, calls=calls)]
    drive(hooks, num_steps=10, clock=clock)
    assert [p[1] for p in calls] == [3, 6, 9, 10]
    steps = [(step, train is not None, ev is not None) for step, train, ev in writer.records]
    assert steps == [(3, False, True), (4, True, False), (6, False, True), (8, True, False), (9, False, True),
                     (10, True, True)]  # fmt: skip
    assert writer.records[-1][2] == {"loss": 1 / 10, "acc": 0.5}
    # every eval took 100 s on the clock, every step 1 s: step_time and the wait fraction see only the steps
    for _, train, _ in writer.records:
        if train is not None:
            assert train["step_time"] == pytest.approx(1.0)
            assert train["data_wait_fraction"] == pytest.approx(0.25)


def test_evaluator_off_when_eval_every_is_zero():
    calls = []
    info = drive([evaluator(0, 6, calls=calls)], num_steps=6)
    assert calls == [] and info.eval_loss is None


def test_a_dev_set_without_utterances_is_no_eval_record_and_no_eval_loss():
    writer, manager = FakeWriter(), FakeManager()
    ckpt = checkpointer(manager, every=2, num_steps=2)
    hooks = [logger(writer, 5, 10), callbacks.Evaluator(lambda params: None, 2, 10), ckpt]
    info = drive(hooks, num_steps=2)
    assert writer.records == [] and writer.advanced == [1, 2]
    assert saved(manager) == [2] and manager.saves[0]["eval_loss"] is None and info.eval_loss is None


# ------------------------------------------------------------------------------------------------ profiler


def test_profiler_traces_from_before_step_first_to_after_step_last(monkeypatch, tmp_path):
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda directory: events.append(("start", directory)))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append(("stop",)))

    class Steps(callbacks.Hook):
        def before_step(self, info):
            events.append(("before", info.step))

    profile_dir = str(tmp_path / "profile")
    drive([callbacks.Profiler(2, 5, profile_dir), Steps()], num_steps=8)
    assert events.count(("start", profile_dir)) == 1 and events.count(("stop",)) == 1
    # started when 2 steps are done, before the third batch is fetched; stopped once the fifth step ran
    assert events.index(("start", profile_dir)) == events.index(("before", 2)) - 1
    assert events.index(("stop",)) == events.index(("before", 5)) - 1


def test_profiler_does_not_start_on_a_resumed_run_past_its_first_step(monkeypatch):
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda directory: events.append("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
    drive([callbacks.Profiler(2, 5, "unused")], num_steps=10, start=6)
    assert events == []


# ------------------------------------------------------------------------------------------------ preemption


def test_preemption_notice_turns_true_after_sigterm_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    notice = callbacks.PreemptionNotice()
    try:
        assert signal.getsignal(signal.SIGTERM) is not previous
        assert not notice(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert notice(2)
    finally:
        notice.close()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_trainer_still_exports_the_names_that_lived_there():
    from sovits2_jax.train import trainer

    assert trainer.PreemptionNotice is callbacks.PreemptionNotice
    assert trainer.StateSnapshot is callbacks.StateSnapshot
