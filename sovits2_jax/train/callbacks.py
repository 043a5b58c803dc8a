"""The training loop's hooks: each concern (profiling, metrics, eval, preemption, checkpoints) is one object that
owns its cadence, so the loop in ``train/trainer.py`` only fetches, steps and calls them.

Per step, in hook order: ``before_step`` (before the batch is fetched), then every hook's ``after_step`` (work that
produces this step's results: the interval summary, eval), then every hook's ``end_step`` (work that consumes them:
the metrics record, the checkpoint). ``on_end`` runs once after the loop ends without an exception; ``close`` runs
in the loop's ``finally``, in reverse hook order.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from sovits2_jax.train import mfu
from sovits2_jax.validation import ConfigError, check

log = logging.getLogger("sovits2_jax.train")


def profile_steps(config) -> tuple[int, int] | None:
    """(first, last) step of ``config.train.profile_steps`` ("a,b"), or None when empty."""
    spec = str(config.train.profile_steps).strip()
    if not spec:
        return None
    try:
        a, b = (int(x) for x in spec.split(","))
    except ValueError:
        raise ConfigError(f"config.train.profile_steps={spec!r}: expected 'first,last' step numbers") from None
    check(0 <= a < b, f"config.train.profile_steps={spec!r}: need 0 <= first < last")
    return a, b


def due(step: int, every: int, last: int) -> bool:
    """True at the multiples of ``every`` and at the last step; never when ``every`` is 0."""
    return bool(every) and (step % every == 0 or step == last)


class StepInfo:
    """What the loop and the hooks share: the step just run and what the hooks made of it."""

    def __init__(self, step: int, state):
        self.step, self.state = step, state
        self.metrics: Mapping | None = None  # the step's device-side metrics
        self.data_wait = 0.0  # seconds the loop waited for this step's batch
        self.data_state = None  # the Grain state right after this step's batch
        self.flops = 0.0  # FLOPs of one step of the latest compiled signature
        self.stop = False  # set by a hook: the loop ends after this step
        self._clear()

    def _clear(self) -> None:
        self.summary: dict[str, float] | None = None  # the train interval summary, on logged steps
        self.eval_scalars: dict[str, float] | None = None  # on eval steps (None too when there is no dev list)
        self.eval_seconds = 0.0
        self.preempted = False

    def advance(self, state, metrics, data_wait: float) -> None:
        """Records one more step run; clears the previous step's results."""
        self.step += 1
        self.state, self.metrics, self.data_wait = state, metrics, data_wait
        self._clear()

    @property
    def eval_loss(self) -> float | None:
        return None if self.eval_scalars is None else self.eval_scalars["loss"]


class Hook:
    """One concern of the training loop; every method is a no-op unless overridden."""

    def before_step(self, info: StepInfo) -> None:
        pass

    def after_step(self, info: StepInfo) -> None:
        pass

    def end_step(self, info: StepInfo) -> None:
        pass

    def on_end(self, info: StepInfo) -> None:
        pass

    def close(self) -> None:
        pass


class Hooks(Hook):
    """Runs a list of hooks in order (``close`` in reverse order)."""

    def __init__(self, hooks: Sequence[Hook]):
        self.hooks = list(hooks)

    def before_step(self, info: StepInfo) -> None:
        for hook in self.hooks:
            hook.before_step(info)

    def after_step(self, info: StepInfo) -> None:
        # two passes: the interval summary is taken before eval runs (eval time is no step time) but written in one
        # record with the eval scalars, and a checkpoint stores the eval loss of its step
        for hook in self.hooks:
            hook.after_step(info)
        for hook in self.hooks:
            hook.end_step(info)

    def on_end(self, info: StepInfo) -> None:
        for hook in self.hooks:
            hook.on_end(info)

    def close(self) -> None:
        for hook in reversed(self.hooks):
            hook.close()


class Profiler(Hook):
    """A JAX trace of steps ``first`` (from before its batch is fetched) to ``last`` (once its step is done)."""

    def __init__(self, first: int, last: int, directory: str):
        self.first, self.last, self.directory = first, last, directory

    def before_step(self, info: StepInfo) -> None:
        if info.step == self.first:
            jax.profiler.start_trace(self.directory)

    def after_step(self, info: StepInfo) -> None:
        if info.step == self.last:
            jax.block_until_ready(info.state)
            jax.profiler.stop_trace()


class Interval:
    """Host-side aggregation of the per-step metrics between two log lines."""

    def __init__(self):
        self.reset(time.perf_counter())

    def reset(self, now: float) -> None:
        self.start, self.wait, self.metrics = now, 0.0, []

    def summary(self, schedules, accepted: int, flops: float, peak: float, skipped_rows: int,
                unit: str = "tokens") -> dict[str, float]:  # fmt: skip
        now = time.perf_counter()
        rows = jax.device_get(self.metrics)
        n = len(rows)
        out = {k: float(np.mean([r[k] for r in rows])) for k in rows[-1] if k not in ("tokens", "skipped_steps")}
        out.pop("skipped", None)
        out["skipped_steps"] = float(rows[-1]["skipped_steps"])
        elapsed = max(now - self.start, 1e-9)
        out["step_time"] = elapsed / n
        out["data_wait_fraction"] = self.wait / elapsed
        out[f"{unit}_per_s"] = float(sum(r["tokens"] for r in rows)) / elapsed
        out["mfu"] = mfu.mfu(flops, out["step_time"], peak)
        out["data_skipped_rows"] = float(skipped_rows)
        for name, schedule in schedules.items():
            out["lr" if len(schedules) == 1 else f"{name}/lr"] = float(schedule(max(accepted - 1, 0)))
        self.reset(now)
        return out


class MetricsLogger(Hook):
    """Every ``every`` steps and at the last: the interval's mean metrics, step time, data wait, tokens/s (frames/s
    where ``unit`` is frames), MFU and learning rates, written with this step's eval scalars (if any) as one record
    of ``writer`` (a MetricsWriter)."""

    def __init__(self, writer, every: int, num_steps: int, schedules: Mapping, peak: float,
                 skipped_rows: Callable[[], int], unit: str = "tokens"):  # fmt: skip
        self.writer, self.every, self.num_steps = writer, every, num_steps
        self.schedules, self.peak, self.skipped_rows, self.unit = schedules, peak, skipped_rows, unit
        self.interval = Interval()

    def after_step(self, info: StepInfo) -> None:
        self.interval.wait += info.data_wait
        self.interval.metrics.append(info.metrics)
        if due(info.step, self.every, self.num_steps):
            skipped, accepted = self.skipped_rows(), int(info.state.accepted)
            info.summary = self.interval.summary(self.schedules, accepted, info.flops, self.peak, skipped, self.unit)

    def end_step(self, info: StepInfo) -> None:
        self.interval.start += info.eval_seconds  # step_time counts training only
        if info.summary or info.eval_scalars:
            self.writer.write(info.step, train=info.summary, eval=info.eval_scalars)
        self.writer.advance(info.step)

    def close(self) -> None:
        self.writer.close()


class Evaluator(Hook):
    """Every ``every`` steps and at the last (never when ``every`` is 0): ``evaluate(state)`` (the train state: its
    params and buffers), the dev-set scalars (``loss`` first among them) or None."""

    def __init__(self, evaluate: Callable[[object], dict[str, float] | None], every: int, num_steps: int):
        self.evaluate, self.every, self.num_steps = evaluate, every, num_steps

    def after_step(self, info: StepInfo) -> None:
        if due(info.step, self.every, self.num_steps):
            t0 = time.perf_counter()
            info.eval_scalars = self.evaluate(info.state)
            info.eval_seconds = time.perf_counter() - t0


class PreemptionNotice:
    """``notice(step)`` is True at the step where the job saves and stops after a SIGTERM.

    One process: our own SIGTERM handler, true at the next step. Several: JAX's coordination service catches the
    signal on whichever process gets it and agrees with every process on one step to save at (the one
    ``reached_preemption_sync_point`` returns true for), so all of them save the same step and none waits in a
    collective the others have left."""

    def __init__(self):
        self.multi = jax.process_count() > 1
        self.signal = None
        if not self.multi:
            self.previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "signal", signum))

    def __call__(self, step: int) -> bool:
        if self.multi:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.signal is not None

    def close(self) -> None:
        if not self.multi:
            signal.signal(signal.SIGTERM, self.previous)


class Preemption(Hook):
    """Asks ``notice`` (a PreemptionNotice) at every step, on every process, whether to save and stop there."""

    def __init__(self, notice: Callable[[int], bool]):
        self.notice = notice

    def end_step(self, info: StepInfo) -> None:
        info.preempted = bool(self.notice(info.step))

    def close(self) -> None:
        self.notice.close()


class StateSnapshot:
    """A Grain iterator state captured earlier, saved by grain's Orbax handler (it calls ``get_state()``)."""

    def __init__(self, state):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=4).encode()


class Checkpointer(Hook):
    """Saves every ``every`` steps, at the last step and at a preempted one (then stops the loop); when the loop
    ends at a step not saved yet (the data ran out), saves it. ``contents(step, state, eval_loss)`` gives the
    (train-state counters, meta) that ``manager.save`` stores beside the params, optimizer state, buffers and data
    state."""

    def __init__(self, manager, every: int, num_steps: int, contents: Callable, last_saved: int | None = None):
        self.manager, self.every, self.num_steps, self.contents = manager, every, num_steps, contents
        self.last_saved = last_saved

    def _save(self, info: StepInfo) -> None:
        counters, meta = self.contents(info.step, info.state, info.eval_loss)
        state = info.state
        self.manager.save(info.step, state.params, state.opt_state, counters, StateSnapshot(info.data_state), meta,
                          info.eval_loss, buffers=state.buffers)  # fmt: skip
        log.info("checkpoint: saving step %d to %s/%d", info.step, self.manager.directory, info.step)
        self.last_saved = info.step

    def end_step(self, info: StepInfo) -> None:
        self.manager.check()  # a save that failed in the background stops the run at the next step
        if due(info.step, self.every, self.num_steps) or info.preempted:
            self._save(info)
        if info.preempted:
            log.warning("SIGTERM: saved step %d, exiting", info.step)
            info.stop = True

    def on_end(self, info: StepInfo) -> None:
        if info.data_state is not None and self.last_saved != info.step:
            self._save(info)
        self.manager.wait()
