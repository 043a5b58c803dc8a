"""Runs N copies of a command on this machine as one multi-process JAX job (CPU devices), for tests and debugging.

    python -m sovits2_jax.cluster.launch_local --num_processes=2 --devices_per_process=4 -- python -m MODULE ARGS
    python -m sovits2_jax.cluster.launch_local -n 2 -- python -m MODULE ARGS

Each process gets SOVITS2_COORDINATOR / SOVITS2_NUM_PROCESSES / SOVITS2_PROCESS_ID (read by
``sovits2_jax.parallel.distributed.initialize``) and its own simulated device count. Output lines are prefixed
with the process index; if one process fails the others are stopped and the launcher exits with its code.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import threading
import time

from absl import flags

from sovits2_jax import cli

_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 2, "processes to start", short_name="n", lower_bound=1)
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "simulated CPU devices per process", lower_bound=1)
_TIMEOUT = flags.DEFINE_float("timeout_s", 600, "stop every process after this many seconds (exit 124)")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "print each process's command and environment, start nothing")


def free_port() -> int:
    """A free port whose successor is free too (the coordinator and its roll call, see ``rendezvous``)."""
    for _ in range(100):
        with socket.socket() as s, socket.socket() as t:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no pair of free ports found")


def _pump(stream, prefix: str, sink) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"{prefix}{line}")
        sink.flush()


def process_env(rank: int, num_processes: int, devices_per_process: int, port: int) -> dict[str, str]:
    """The variables that make process ``rank`` one of the job (on top of the launcher's environment)."""
    return dict(
        SOVITS2_COORDINATOR=f"127.0.0.1:{port}",
        SOVITS2_NUM_PROCESSES=str(num_processes),
        SOVITS2_PROCESS_ID=str(rank),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
        JAX_PLATFORMS="cpu",
    )


def dry_run(command: list[str], num_processes: int, devices_per_process: int) -> None:
    """Prints what each process would run: rank, environment and command."""
    port = free_port()
    for rank in range(num_processes):
        env = process_env(rank, num_processes, devices_per_process, port)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"[rank {rank}] host=localhost env: {env}")
        print(f"[rank {rank}] command: {shlex.join(command)}")


def launch(command: list[str], num_processes: int, devices_per_process: int, timeout_s: float = 600) -> int:
    """Starts the processes, streams their output, returns the first non-zero exit code (or 0).

    When one process fails the others are stopped at once and the failed rank is named on stderr."""
    port = free_port()
    procs = []
    for rank in range(num_processes):
        env = {**os.environ, **process_env(rank, num_processes, devices_per_process, port)}
        p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=_pump, args=(p.stdout, f"[{rank}] ", sys.stdout), daemon=True).start()
        procs.append(p)
    deadline = time.monotonic() + timeout_s
    code = 0
    while None in [p.poll() for p in procs]:
        failed = [(rank, p.returncode) for rank, p in enumerate(procs) if p.returncode not in (None, 0)]
        if failed or time.monotonic() > deadline:
            code = failed[0][1] if failed else 124
            what = f"process {failed[0][0]} exited with code {code}" if failed else f"timeout after {timeout_s:.0f}s"
            print(f"launch_local: {what}; stopping the other processes", file=sys.stderr, flush=True)
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    for p in procs:
        p.wait()
    return code or next((p.returncode for p in procs if p.returncode), 0)


def main(argv: list[str]) -> int:
    command = argv[1:]  # absl leaves what follows `--` as positional arguments
    if not command:
        raise cli.Error("give the command to run after --")
    if _DRY_RUN.value:
        dry_run(command, _NUM_PROCESSES.value, _DEVICES.value)
        return 0
    return launch(command, _NUM_PROCESSES.value, _DEVICES.value, _TIMEOUT.value)


if __name__ == "__main__":
    flags.FLAGS.set_gnu_getopt(False)  # flags end at the command, with or without `--`
    cli.run(main)
