"""The one training loop: config -> mesh -> data -> sharded state -> jitted step -> metrics, eval, checkpoints.

A model family (``config.family``, see ``train/family.py``) supplies players and losses; nothing here branches on
it; logging, eval, checkpoints, profiling and preemption are hooks with their own cadence (``train/callbacks.py``).
Every input of a step is a pure function of (seed, step) and the restored state, so a run resumed from a checkpoint
continues exactly as the uninterrupted one (same batches: the Grain position is in the checkpoint; same rng:
``step.step_key``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from sovits2_jax import paths
from sovits2_jax.data import mesh_feed
from sovits2_jax.parallel import mesh as mesh_lib
from sovits2_jax.parallel import sharding
from sovits2_jax.train import callbacks, checkpoint, mfu
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib
from sovits2_jax.train import validate as validate_lib
from sovits2_jax.train.callbacks import PreemptionNotice, StateSnapshot  # noqa: F401 (re-exported: they lived here)
from sovits2_jax.train.metrics import MetricsWriter
from sovits2_jax.validation import ConfigError, check

log = logging.getLogger("sovits2_jax.train")


# ------------------------------------------------------------------------------------------------- validation


def _check_accumulation(config, mesh) -> None:
    k = config.train.accum_steps
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    local = max(1, ways // jax.process_count())
    if k == 1:
        return
    if "data" in config:
        shards = config.data.num_shards or jax.process_count()
        rows = config.data.batch_multiple * (shards // jax.process_count())  # a multiple of every local batch
        check(
            rows % (k * local) == 0,
            f"config.train.accum_steps={k}: config.data.batch_multiple={config.data.batch_multiple} x "
            f"{shards // jax.process_count()} data shards per process must be a multiple of accum_steps x {local} "
            "local data-parallel devices",
        )
    elif "batch_size" in config.train:
        check(
            config.train.batch_size % (k * ways) == 0,
            f"config.train.accum_steps={k}: config.train.batch_size={config.train.batch_size} must be a multiple "
            f"of accum_steps x {ways} data-parallel devices",
        )


# ------------------------------------------------------------------------------------------------------ data


def _data_list(config, split: str) -> str:
    key = "train_list" if split == "train" else "dev_list"
    return str(config.data.get(key, "") or (config.data.get("data_list", "") if split == "train" else ""))


def open_batches(family, config, split: str):
    """This process's batches of ``split`` ("train", or "dev": one pass), or None when there is no dev list."""
    own = family.make_batches(config, split)
    if own is not None:
        return own
    from sovits2_jax.data import pipeline

    key = "train_list" if split == "train" else "dev_list"
    path = _data_list(config, split)
    if not path:
        if split == "train":
            raise ConfigError("config.data.train_list is empty: give --config.data.train_list=.../data.list")
        return None
    cfg = config.data.copy_and_resolve_references()
    if split == "dev":
        cfg.num_epochs = 1
    try:
        dataset = pipeline.build_dataset(cfg, data_list=path)
        if dataset.steps_per_epoch(0) == 0:
            raise ValueError("no batches: every row was skipped (see the skip counts)")
    except (OSError, ValueError) as e:
        raise ConfigError(f"config.data.{key}={path!r}: {e}") from None
    return pipeline.Batches(cfg, dataset)


def _batch_axes(config, batches) -> tuple:
    return tuple(getattr(batches, "batch_axes", None) or config.data.batch_axes)


def feed(batches, mesh, axes, prefetch: int) -> Iterator[tuple[dict, dict]]:
    """(global batch, Grain state right after it) pairs, ``prefetch`` ahead: a checkpoint stores the state of the
    batch just trained on, not of the prefetched ones."""
    pairs = ((mesh_feed.to_global(b, mesh, axes), batches.get_state()) for b in batches)
    return mesh_feed.prefetch(pairs, prefetch) if prefetch > 0 else pairs


# ------------------------------------------------------------------------------------------------------ eval


def evaluate(family, config, eval_fn, params, mesh, buffers: dict | None = None) -> dict[str, float] | None:
    """The eval loss and aux terms over the dev list, weighted by utterances (CosyVoice's cv); ``buffers``: the
    state's (``Family.init_buffers``)."""
    batches = open_batches(family, config, "dev")
    if batches is None:
        return None
    limit = config.train.eval_batches or None
    sums, total = {}, 0.0
    try:
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break
            batch = mesh_feed.to_global(batch, mesh, _batch_axes(config, batches))
            scalars, utts = eval_fn(params, batch, i, buffers or {})
            scalars, utts = jax.device_get((scalars, utts))
            total += float(utts)
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + float(v) * float(utts)
    finally:
        batches.close()
    if total == 0:
        log.warning("eval: the dev list gave no valid utterance")
        return None
    return {k: v / total for k, v in sums.items()}


# ------------------------------------------------------------------------------------------------------ loop


def _tokens(family, batch) -> jax.Array:
    return jnp.asarray(family.tokens(batch), jnp.float32)


def _signature(batch: dict) -> tuple:
    return tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))


def _meta(family, config, step: int) -> dict:
    meta = dict(family.export_meta(config))
    if "player" not in meta:
        trained = [p.name for p in family.players(config) if p.optimizer is not None]
        meta["player"] = trained[0] if trained else family.players(config)[0].name
    return {**meta, "family": config.family, "step": step}


def train(config, workdir: str | os.PathLike) -> int:
    """Trains until ``config.train.num_steps`` (resuming from ``workdir``'s latest checkpoint: a local path or
    ``gs://``, see sovits2_jax/paths.py); returns 0."""
    validate_lib.trainer_sections(config)  # the CLI ran the whole chain (train.validate.validate)
    workdir = paths.resolve(workdir, "workdir")
    t = config.train
    family = family_lib.get(config.family)
    mesh = mesh_lib.make_mesh(dict(config.mesh))
    _check_accumulation(config, mesh)
    ckpts = checkpoint.Checkpoints(workdir, keep_last=t.keep_last, keep_best=t.keep_best)
    try:
        ckpts.check_family(config.family)
        with jax.set_mesh(mesh), sharding.activation_rules(config.sharding.rules):
            return _run(family, config, workdir, mesh, ckpts)
    finally:
        ckpts.close()


def _summary(config, params: dict, mesh, step: int) -> str:
    """The start-up line: family, parameters per player, mesh, devices, processes, steps."""
    sizes = ", ".join(f"{name} {sum(x.size for x in jax.tree.leaves(p)) / 1e6:.2f}M" for name, p in params.items())
    shape = " x ".join(f"{axis} {n}" for axis, n in mesh.shape.items())
    return (
        f"{config.family}: parameters {sizes}; mesh {shape} over {mesh.size} devices in {jax.process_count()} "
        f"process(es); steps {step + 1}..{config.train.num_steps}"
    )


def _run(family, config, workdir, mesh, ckpts) -> int:
    t = config.train
    start = ckpts.latest_step()
    if start is not None and start >= t.num_steps:
        log.warning("workdir %s is already at step %d >= num_steps %d: nothing to do", workdir, start, t.num_steps)
        return 0
    batches = open_batches(family, config, "train")
    init = init_buffers = None
    source = config.init.path
    if start is None and source:
        init = lambda params: family.init_from(config, source, params)
        init_buffers = lambda buffers: family.buffers_from(config, source, buffers)
    built = state_lib.build(family, config, mesh, init, init_buffers)
    state = built.state
    step = 0
    if start is not None:
        params, opt_state, saved, buffers = ckpts.restore(
            start, state.params, state.opt_state, batches, buffers=state.buffers
        )
        restored = state_lib.TrainState(params, opt_state, *([None] * 3), buffers=buffers)
        state = state_lib.with_counters(restored, saved, mesh)
        step = start
        log.info("resumed from %s/%d", ckpts.directory, start)
    log.info(_summary(config, state.params, mesh, step))
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    rep = state_lib.replicated(mesh)
    axes = _batch_axes(config, batches)
    train_step = step_lib.make_train_step(family, config, built.graphdefs, built.txs)

    def step_with_tokens(s, batch, i):
        s, metrics = train_step(s, batch, i)
        return s, {**metrics, "tokens": _tokens(family, batch)}

    jitted = jax.jit(
        step_with_tokens,
        in_shardings=(built.shardings, mesh_feed.batch_sharding(mesh, axes, 1), rep),
        out_shardings=(built.shardings, rep),
        donate_argnums=(0,),
    )
    eval_fn = jax.jit(step_lib.make_eval_step(family, config, built.graphdefs))
    compiled = {}
    peak, peak_source = mfu.peak_flops(override=t.peak_flops)
    log.info("MFU against %.3g FLOP/s per device (%s)", peak, peak_source)

    preempted = PreemptionNotice()
    writer = MetricsWriter(workdir, t.num_steps, step, config)
    skipped_rows = lambda: sum(getattr(batches, "skipped", {}).values())
    contents = lambda step, state, eval_loss: (_train_json(config, state, step, eval_loss), _meta(family, config, step))
    profile = callbacks.profile_steps(config)
    hooks = callbacks.Hooks([
        *([callbacks.Profiler(*profile, str(workdir / "profile"))] if profile else []),
        callbacks.MetricsLogger(writer, t.log_every, t.num_steps, built.schedules, peak, skipped_rows,
                                family.throughput_unit),
        callbacks.Evaluator(lambda s: evaluate(family, config, eval_fn, s.params, mesh, s.buffers), t.eval_every,
                            t.num_steps),
        callbacks.Preemption(preempted),
        callbacks.Checkpointer(ckpts, t.checkpoint_every, t.num_steps, contents, last_saved=start),
    ])  # fmt: skip
    data = feed(batches, mesh, axes, t.prefetch)
    info = callbacks.StepInfo(step, state)
    try:
        while info.step < t.num_steps:
            hooks.before_step(info)
            t0 = time.perf_counter()
            try:
                batch, info.data_state = next(data)
            except StopIteration:
                log.warning("the training data ended at step %d (config.data.num_epochs)", info.step)
                break
            data_wait = time.perf_counter() - t0
            sig = _signature(batch)
            if sig not in compiled:
                compiled[sig] = jitted.lower(info.state, batch, jnp.int32(info.step)).compile()
                info.flops = mfu.compiled_flops(compiled[sig])
            state, metrics = compiled[sig](info.state, batch, jnp.int32(info.step))
            info.advance(state, metrics, data_wait)
            hooks.after_step(info)  # log, eval, checkpoint, each at its own cadence
            if info.stop:
                break
        hooks.on_end(info)  # the final checkpoint if the last step was not saved yet; waits for the saves
    finally:
        hooks.close()
        batches.close()
    return 0


def _train_json(config, state, step: int, eval_loss) -> dict:
    return dict(
        step=step, family=config.family, seed=int(config.seed), eval_loss=eval_loss, **state_lib.counters(state)
    )
