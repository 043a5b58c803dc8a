"""A roll call before ``jax.distributed.initialize``, so a process that never arrives is named in the error.

JAX's coordination service aborts the whole process (a C++ fatal log, no Python exception) when a task does not
register in time, and does not say which task. Process 0 therefore listens on its own port first (the coordinator
port + 1 unless ``SOVITS2_RENDEZVOUS_PORT`` is set); every other process connects and sends its id; when all have
arrived process 0 answers each with "go". Whoever runs out of time exits with one line naming the missing processes.
"""

from __future__ import annotations

import socket
import time

from sovits2_jax.validation import UserError

GO = b"go\n"


class RendezvousError(UserError, RuntimeError):
    """Not every process of the job arrived in time; the message names the missing ones."""


def _serve(host: str, port: int, num_processes: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    arrived: dict[int, socket.socket] = {}
    with socket.create_server(("", port), reuse_port=False) as server:
        server.settimeout(0.2)
        while len(arrived) < num_processes - 1:
            if time.monotonic() > deadline:
                missing = sorted(set(range(1, num_processes)) - set(arrived))
                for conn in arrived.values():
                    conn.close()
                raise RendezvousError(
                    f"process(es) {missing} of {num_processes} never joined the job at {host}:{port} "
                    f"within {timeout_s:.0f}s"
                )
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                rank = int(conn.recv(64).decode().strip() or -1)
            except (OSError, ValueError):
                conn.close()
                continue
            if 0 < rank < num_processes:
                arrived[rank] = conn
            else:
                conn.close()
        for conn in arrived.values():
            conn.sendall(GO)
            conn.close()


def _join(host: str, port: int, process_id: int, num_processes: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RendezvousError(
                f"process {process_id} of {num_processes}: process 0 at {host}:{port} did not start the job "
                f"within {timeout_s:.0f}s (process 0 or another process never arrived)"
            )
        try:
            with socket.create_connection((host, port), timeout=min(left, 5.0)) as conn:
                conn.sendall(f"{process_id}\n".encode())
                conn.settimeout(left)
                if conn.recv(16) == GO:
                    return
        except OSError:
            pass
        time.sleep(0.2)


def roll_call(host: str, port: int, num_processes: int, process_id: int, timeout_s: float) -> None:
    """Returns once all ``num_processes`` processes have called it; RendezvousError after ``timeout_s``."""
    if num_processes <= 1:
        return
    if process_id == 0:
        _serve(host, port, num_processes, timeout_s)
    else:
        _join(host, port, process_id, num_processes, timeout_s)
