"""Names a lost process in one line: each process of a multi-process job beats in the coordination service's
key-value store, and a daemon thread stops this process when another one has stopped beating.

Without it the survivors of a killed, preempted or unreachable process stop only when JAX's coordination service
misses that process's heartbeats (``SOVITS2_HEARTBEAT_TIMEOUT``), through a C++ fatal error and a stack dump with
the lost task's number buried in it. Here, after ``SOVITS2_PEER_TIMEOUT`` seconds (default: a third of the
heartbeat timeout) without a beat from process K, every survivor prints

    error: process K of N stopped answering (no beat for T s: killed, preempted, or its host is down); ...

and exits with status 1. Beats count up (no clocks are compared across hosts) and a process that finishes
normally marks itself done, so a peer that ends a little earlier is not taken for a lost one. Losing the
coordinator (process 0) is the same line. The last complete checkpoint resumes the run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

PREFIX = "sovits2/alive/"
DONE = "done"
INTERVAL_S = 1.0


class Watchdog:
    """Beats for ``process_id`` and watches the other ``num_processes - 1`` through ``client`` (JAX's
    DistributedRuntimeClient: ``key_value_set``, ``key_value_dir_get``); ``on_lost(message)`` ends the process."""

    def __init__(self, client, process_id: int, num_processes: int, timeout_s: float,
                 on_lost: Callable[[str], None] | None = None, interval_s: float = INTERVAL_S):  # fmt: skip
        self.client, self.process_id, self.num_processes = client, process_id, num_processes
        self.timeout_s, self.interval_s = timeout_s, interval_s
        self.on_lost = on_lost or _exit
        self._beats = 0
        self._seen: dict[int, tuple[str, float]] = {}  # process -> (last value, monotonic time it changed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sovits2-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._beat()
        now = time.monotonic()
        self._seen = {p: ("", now) for p in range(self.num_processes) if p != self.process_id}
        self._thread.start()
        return self

    def _beat(self, value: str | None = None) -> None:
        self._beats += 1
        self.client.key_value_set(f"{PREFIX}{self.process_id}", value or str(self._beats), allow_overwrite=True)

    def check(self) -> str | None:
        """One beat and one look at the others: the message for a lost process, else None."""
        try:
            self._beat()
            values = dict(self.client.key_value_dir_get(PREFIX))
        except Exception as e:  # the coordination service lives in process 0
            return (f"error: process 0 of {self.num_processes} (the coordinator) stopped answering ({_first_line(e)}); "
                    f"process {self.process_id} stops too. Resume from the last complete checkpoint")  # fmt: skip
        now = time.monotonic()
        for p, (last, since) in self._seen.items():
            value = values.get(f"{PREFIX}{p}", "")
            if value == DONE:
                continue
            if value != last:
                self._seen[p] = (value, now)
            elif now - since > self.timeout_s:
                silent = f"no beat for {now - since:.0f} s: killed, preempted, or its host is down"
                return (f"error: process {p} of {self.num_processes} stopped answering ({silent}); process "
                        f"{self.process_id} stops too. Resume from the last complete checkpoint")  # fmt: skip
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            message = self.check()
            if message is not None and not self._stop.is_set():
                self.on_lost(message)
                return

    def stop(self, done: bool = True) -> None:
        """Stops watching; ``done``: tells the others this process ended normally."""
        if self._stop.is_set():
            return
        self._stop.set()
        if done:
            with contextlib.suppress(Exception):  # the coordinator may already be gone at exit
                self._beat(DONE)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _exit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(1)  # another thread may be blocked in a collective with the lost process: no clean unwinding


def start(client, process_id: int, num_processes: int, env=os.environ) -> Watchdog | None:
    """The job's watchdog, stopped (and marked done) at interpreter exit; None for one process or
    SOVITS2_PEER_TIMEOUT=0."""
    heartbeat = float(env.get("SOVITS2_HEARTBEAT_TIMEOUT", 100))
    timeout_s = float(env.get("SOVITS2_PEER_TIMEOUT", max(5.0, heartbeat / 3)))
    if num_processes < 2 or timeout_s <= 0:
        return None
    dog = Watchdog(client, process_id, num_processes, timeout_s).start()
    atexit.register(dog.stop)
    return dog
