"""A lost process is named in one line by the survivors (sovits2_jax/parallel/watchdog.py), with real processes
joined through jax.distributed and a real SIGKILL; a process that ends normally earlier is not taken for lost."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sovits2_jax.cluster.launch_local import free_port

ROOT = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from sovits2_jax.parallel.distributed import initialize
    initialize()
    import jax
    print("joined", jax.process_index(), flush=True)
    time.sleep(float(sys.argv[1]))
    print("finished", jax.process_index(), flush=True)
    """
)


def _start(tmp_path, seconds: tuple[float, float]) -> list[subprocess.Popen]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    env = {**os.environ, "SOVITS2_COORDINATOR": f"127.0.0.1:{free_port()}", "SOVITS2_NUM_PROCESSES": "2",
           "SOVITS2_PEER_TIMEOUT": "4", "SOVITS2_HEARTBEAT_TIMEOUT": "120", "JAX_PLATFORMS": "cpu"}  # fmt: skip
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return [
        subprocess.Popen([sys.executable, str(script), str(s)], cwd=ROOT, env={**env, "SOVITS2_PROCESS_ID": str(i)},
                         **pipes)
        for i, s in enumerate(seconds)
    ]


def _wait_joined(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.startswith("joined"), line + proc.stderr.read()[-2000:]


def test_the_survivor_names_a_killed_process_in_one_line_and_exits(tmp_path):
    survivor, victim = _start(tmp_path, (120, 120))
    for p in (survivor, victim):
        _wait_joined(p)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    t0 = time.monotonic()
    _, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 1 and time.monotonic() - t0 < 30  # long before JAX's 120-s heartbeat timeout
    lines = [line for line in err.splitlines() if line.strip()]
    lost = [line for line in lines if line.startswith("error: process 1 of 2 stopped answering")]
    assert len(lost) == 1, err[-3000:]
    assert "Resume from the last complete checkpoint" in lost[0]
    assert "Check failure" not in err and "Terminating process" not in err, err[-3000:]  # no C++ fatal dump


def test_a_process_that_finishes_first_is_not_taken_for_lost(tmp_path):
    late, early = _start(tmp_path, (12, 0.5))  # process 1 ends ~12 s before process 0, three peer timeouts
    outs = [p.communicate(timeout=90) for p in (late, early)]
    assert [late.returncode, early.returncode] == [0, 0], [o[1][-2000:] for o in outs]
    assert all("stopped answering" not in err for _, err in outs)
    assert "finished 0" in outs[0][0] and "finished 1" in outs[1][0]
