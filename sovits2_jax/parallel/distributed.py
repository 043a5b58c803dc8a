"""Multi-process start-up: ``jax.distributed.initialize`` from the environment, with a timeout and a clear error.

Sources, in order: explicit variables (SOVITS2_COORDINATOR=host:port, SOVITS2_NUM_PROCESSES, SOVITS2_PROCESS_ID,
optional SOVITS2_LOCAL_DEVICE_IDS), then SLURM or Cloud TPU (JAX's own cluster detection). A single process with
none of these set runs without initialising.

Timeouts (seconds, from the environment): SOVITS2_INIT_TIMEOUT (300) for every process to arrive: with explicit
variables a roll call names the processes that never did (``rendezvous``); SOVITS2_HEARTBEAT_TIMEOUT (100) after
which JAX's coordination service stops the survivors of a process that died; SOVITS2_PEER_TIMEOUT (a third of
that) after which our ``watchdog`` stops them first, naming the lost process in one line.
"""

from __future__ import annotations

import logging
import os

import jax

from sovits2_jax.parallel import rendezvous, watchdog

log = logging.getLogger(__name__)


def cluster_kind(env=os.environ) -> str | None:
    """'explicit', 'slurm', 'tpu' or None (single process)."""
    if env.get("SOVITS2_COORDINATOR"):
        return "explicit"
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return "slurm"
    if env.get("TPU_WORKER_HOSTNAMES") or env.get("CLOUD_TPU_TASK_ID"):
        return "tpu"
    return None


def initialize(timeout_s: int | None = None, env=os.environ) -> None:
    """Joins the multi-process job described by the environment (no-op for a single process)."""
    kind = cluster_kind(env)
    if kind is None:
        return
    timeout_s = int(env.get("SOVITS2_INIT_TIMEOUT", 300)) if timeout_s is None else timeout_s
    kwargs = {
        "initialization_timeout": timeout_s,
        "heartbeat_timeout_seconds": int(env.get("SOVITS2_HEARTBEAT_TIMEOUT", 100)),
    }
    if kind == "explicit":
        missing = [k for k in ("SOVITS2_NUM_PROCESSES", "SOVITS2_PROCESS_ID") if k not in env]
        if missing:
            raise RuntimeError(f"SOVITS2_COORDINATOR is set but {', '.join(missing)} is not")
        kwargs.update(
            coordinator_address=env["SOVITS2_COORDINATOR"],
            num_processes=int(env["SOVITS2_NUM_PROCESSES"]),
            process_id=int(env["SOVITS2_PROCESS_ID"]),
        )
        if env.get("SOVITS2_LOCAL_DEVICE_IDS"):
            kwargs["local_device_ids"] = [int(i) for i in env["SOVITS2_LOCAL_DEVICE_IDS"].split(",")]
        host, _, port = env["SOVITS2_COORDINATOR"].rpartition(":")
        rendezvous.roll_call(
            host,
            int(env.get("SOVITS2_RENDEZVOUS_PORT", int(port) + 1)),
            kwargs["num_processes"],
            kwargs["process_id"],
            timeout_s,
        )
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:
        where = kwargs.get("coordinator_address", kind)
        raise RuntimeError(
            f"jax.distributed.initialize ({kind}, coordinator {where}) failed after up to {timeout_s}s: {e}"
        ) from e
    log.info("process %d/%d joined (%s)", jax.process_index(), jax.process_count(), kind)
    from jax._src import distributed as jax_distributed  # the client JAX keeps; no public handle exists

    watchdog.start(jax_distributed.global_state.client, jax.process_index(), jax.process_count(), env)
