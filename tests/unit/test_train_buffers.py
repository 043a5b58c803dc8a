"""Family buffers (non-gradient state carried beside the params, ``Family.init_buffers``) on a toy family: losses
get them and return what they became, the train step threads them through its phases and microbatches and keeps
the old ones on a skipped step, eval reads them without changing them, and the trainer's checkpoints save,
restore and average them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs import qwen2
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib


class Scale(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((2,)))

    def __call__(self, x):
        return x * self.w[...]


def counting_loss(models, batch, rng, train, buffers):
    """MSE of w * x against y; the buffers count the calls and sum the first feature of the rows seen, and
    ``seen_calls`` records how many calls this one found before it (the threading order)."""
    mine = buffers["model"]
    x = batch["x"]
    loss = jnp.mean(jnp.square(models["model"](x) - batch["y"]))
    new = {"calls": mine["calls"] + 1, "seen": mine["seen"] + jnp.sum(x[:, 0])}
    return loss, {"weight": jnp.float32(x.shape[0]), "seen_calls": mine["calls"].astype(jnp.float32),
                  family_lib.BUFFERS: {"model": new}}  # fmt: skip


class CountingFamily(family_lib.Family):
    name = "counting"

    def players(self, config):
        return [family_lib.Player("model", lambda: Scale(nnx.Rngs(0)), config.train.optimizer)]

    def phases(self, config):
        return [family_lib.Phase("model", counting_loss), family_lib.Phase("model", counting_loss)]

    def eval_loss(self, config):
        return counting_loss

    def init_buffers(self, config, mesh):
        rep = state_lib.replicated(mesh)
        return {"model": {"calls": jax.device_put(jnp.int32(0), rep), "seen": jax.device_put(jnp.float32(0), rep)}}

    def export_meta(self, config):
        return {"format": "none"}


def setup(accum_steps: int = 1):
    config = qwen2.get_config("tiny")
    config.train.accum_steps = accum_steps
    mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    family = CountingFamily()
    built = state_lib.build(family, config, mesh)
    return config, family, mesh, built


def batch(seed: int, nan: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 2)).astype(np.float32)
    if nan:
        x[1, 1] = np.nan
    return {"x": jnp.asarray(x), "y": jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)}


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_the_step_threads_buffers_through_phases_and_microbatches(accum_steps):
    config, family, mesh, built = setup(accum_steps)
    with jax.set_mesh(mesh):
        train_step = jax.jit(step_lib.make_train_step(family, config, built.graphdefs, built.txs))
        b = batch(0)
        state, metrics = train_step(built.state, b, 0)
        calls = 2 * accum_steps  # two phases, each over every microbatch, each seeing the previous call's result
        assert int(state.buffers["model"]["calls"]) == calls
        np.testing.assert_allclose(float(state.buffers["model"]["seen"]), 2 * float(jnp.sum(b["x"][:, 0])), rtol=1e-6)
        # the last phase's microbatches found 2k-k .. 2k-1 calls before them: their weighted mean
        np.testing.assert_allclose(float(metrics["model/seen_calls"]), accum_steps + (accum_steps - 1) / 2)
        assert "buffers" not in str(sorted(metrics))
        state, _ = train_step(state, batch(1), 1)
        assert int(state.buffers["model"]["calls"]) == 2 * calls
        # a non-finite step is skipped: params and buffers as they were
        before = jax.device_get((state.params, state.buffers))
        state, metrics = train_step(state, batch(2, nan=True), 2)
        assert float(metrics["skipped"]) == 1.0
        after = jax.device_get((state.params, state.buffers))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)


def test_eval_reads_buffers_and_changes_nothing():
    config, family, mesh, built = setup()
    buffers = {"model": {"calls": jnp.int32(5), "seen": jnp.float32(0)}}
    with jax.set_mesh(mesh):
        eval_step = jax.jit(step_lib.make_eval_step(family, config, built.graphdefs))
        scalars, utts = eval_step(built.state.params, batch(0), 0, buffers)
    assert float(scalars["seen_calls"]) == 5.0 and float(utts) == 1.0


def test_a_loss_may_not_invent_buffers_for_other_players():
    def bad(models, batch, rng, train, buffers):
        return jnp.float32(0), {family_lib.BUFFERS: {"other": {}}}

    with pytest.raises(ValueError, match="buffers of \\['other'\\]"):
        step_lib.call_loss(bad, {}, {}, None, True, {"model": {"calls": jnp.int32(0)}})


def test_checkpoints_save_restore_and_average_buffers(tmp_path):
    import grain

    from sovits2_jax.convert import checkpoint as ckpt
    from sovits2_jax.train import average
    from sovits2_jax.train.checkpoint import Checkpoints

    _, _, mesh, built = setup()
    params, opt_state = jax.device_get((built.state.params, built.state.opt_state))
    saved = {}
    meta = {"format": "none", "config": {}, "player": "model", "family": "counting"}
    ckpts = Checkpoints(str(tmp_path), keep_last=10, async_save=False)
    batches = iter(grain.MapDataset.range(8).to_iter_dataset())
    for step in (1, 2):
        buffers = {"model": {"calls": np.int32(7), "seen": np.float32(step * 1.5)}}
        saved[step] = buffers
        counters = {"step": step, "family": "counting", "eval_loss": None}
        ckpts.save(step, params, opt_state, counters, batches, {**meta, "step": step}, buffers=buffers)
        ckpts.wait()
    with jax.set_mesh(mesh):
        _, _, _, restored = ckpts.restore(2, built.state.params, built.state.opt_state, batches,
                                          buffers=built.state.buffers)  # fmt: skip
        _, _, _, none = ckpts.restore(2, built.state.params, built.state.opt_state, batches)
    ckpts.close()
    assert none == {}
    assert int(restored["model"]["calls"]) == 7 and float(restored["model"]["seen"]) == 3.0
    assert restored["model"]["seen"].sharding == built.state.buffers["model"]["seen"].sharding
    step_dir = tmp_path / "checkpoints" / "2"
    assert ckpt.load_buffers(step_dir) == {"calls": 7, "seen": 3.0}  # the exported player's
    dst, _ = average.average_checkpoints(tmp_path, 2, "latest", tmp_path / "avg")
    mean = ckpt.load_buffers(dst)
    assert float(mean["seen"]) == 2.25 and int(mean["calls"]) == 7 and mean["seen"].dtype == np.float32
    np.testing.assert_array_equal(ckpt.load_checkpoint(dst)[0]["w"], params["model"]["w"])
