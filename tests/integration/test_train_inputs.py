"""Trainer step mechanics and bad input, in process: gradient accumulation equals the full batch, a NaN batch is
skipped and counted with params untouched, the qwen2 family trains, and each bad input is one clear error."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers as th

from sovits2_jax.configs import cosyvoice2, qwen2
from sovits2_jax.parallel.mesh import make_mesh
from sovits2_jax.train import family as family_lib
from sovits2_jax.train import state as state_lib
from sovits2_jax.train import step as step_lib
from sovits2_jax.train import trainer
from sovits2_jax.validation import ConfigError


def qwen2_config(**train):
    config = qwen2.get_config("tiny")
    config.train.update(dict(batch_size=8, seq_len=16, **train))
    return config


def one_device():
    return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def token_batch(config, seed=0):
    tokens = np.random.default_rng(seed).integers(0, config.model.vocab_size, (config.train.batch_size, 17))
    valid = np.array([True, True, False, True, True, True, False, True])  # unequal weights per microbatch
    return {"tokens": jnp.asarray(tokens, jnp.int32), "valid": jnp.asarray(valid)}


def built_qwen2():
    """(config, family, one-device mesh, state_lib.Built) of the tiny qwen2 family."""
    config, family, mesh = qwen2_config(), family_lib.get("qwen2"), one_device()
    return config, family, mesh, state_lib.build(family, config, mesh)


def test_accumulated_microbatches_equal_one_full_batch():
    config, family, mesh, built = built_qwen2()
    with jax.set_mesh(mesh):
        phase = family.phases(config)[0]
        batch = token_batch(config)
        params = built.state.params
        rng = jax.random.key(0)
        full = jax.jit(lambda p, b: step_lib.phase_gradients(phase, built.graphdefs, p, b, rng, 1))(params, batch)
        acc = jax.jit(lambda p, b: step_lib.phase_gradients(phase, built.graphdefs, p, b, rng, 4))(params, batch)
    (loss1, aux1, w1, g1), (loss4, aux4, w4, g4) = full, acc
    assert float(w1) == float(w4) == 6 * 16  # 6 valid rows x 16 targets
    np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
    np.testing.assert_allclose(aux4["acc"], aux1["acc"], atol=1e-6)
    flat1, flat4 = jax.tree.leaves(g1), jax.tree.leaves(g4)
    assert len(flat1) == len(flat4) > 0
    scale = max(float(jnp.max(jnp.abs(g))) for g in flat1)
    for a, b in zip(flat1, flat4):
        np.testing.assert_allclose(b, a, atol=1e-5 * scale)


def test_nonfinite_batch_is_skipped_counted_and_leaves_params():
    config, family, mesh, built = built_qwen2()
    with jax.set_mesh(mesh):
        train_step = jax.jit(step_lib.make_train_step(family, config, built.graphdefs, built.txs))
        good = token_batch(config, 1)
        state, m1 = train_step(built.state, good, 0)
        before = jax.device_get((state.params, state.opt_state))
        # a corrupt row: a token id past the vocabulary; jnp.take's fill mode turns it into NaN embeddings
        bad = dict(good, tokens=good["tokens"].at[3, 5].set(config.model.vocab_size + 7))
        state, m2 = train_step(state, bad, 1)
        after = jax.device_get((state.params, state.opt_state))
        state, m3 = train_step(state, good, 2)
    assert np.isfinite(float(m1["loss"])) and float(m1["skipped_steps"]) == 0
    assert np.isnan(float(m2["loss"])), "the planted id must make the loss non-finite"
    assert (float(m2["skipped"]), float(m2["skipped_steps"])) == (1.0, 1.0)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    assert int(state.accepted) == 2 and float(m3["skipped_steps"]) == 1.0 and np.isfinite(float(m3["loss"]))


@pytest.fixture(scope="module")
def qwen2_workdir(tmp_path_factory):
    """A real qwen2-family run (synthetic tokens, in process, on the 8 simulated devices)."""
    workdir = tmp_path_factory.mktemp("qwen2")
    config = qwen2_config(num_steps=8, log_every=1, eval_every=8, checkpoint_every=8)
    config.train.optimizer.lr = 1e-2
    config.train.profile_steps = "2,4"
    assert trainer.train(config, str(workdir)) == 0
    return workdir


def test_qwen2_family_trains_on_synthetic_tokens(qwen2_workdir):
    losses = {s: v[0] for s, v in th.losses(qwen2_workdir).items()}
    assert sorted(losses) == list(range(1, 9))
    assert losses[8] < 0.9 * losses[1], losses
    assert th.complete_steps(qwen2_workdir) == [8]
    assert any("eval/loss" in r for r in th.read_metrics(qwen2_workdir))
    # --config.train.profile_steps=2,4: one jax.profiler trace (XPlane protobuf) in WORKDIR/profile
    traces = list((qwen2_workdir / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000, traces


def llm_config(tiny_corpus, **data):
    config = cosyvoice2.get_config("llm_tiny")
    config.data.update({"train_list": tiny_corpus.train_list, "dev_list": tiny_corpus.dev_list, **data})
    return config


def test_workdir_of_another_family_is_one_clear_error(qwen2_workdir, tiny_corpus):
    with pytest.raises(ConfigError, match=r"hold family 'qwen2'.*config.family='llm'"):
        trainer.train(llm_config(tiny_corpus), str(qwen2_workdir))


def test_bad_data_lists_are_one_clear_error(tiny_corpus, tmp_path):
    import pyarrow.parquet as pq

    from sovits2_jax.data.prep import synthetic

    missing = str(tmp_path / "nowhere" / "data.list")
    with pytest.raises(ConfigError, match=r"config.data.train_list=.*nowhere/data.list.*not found"):
        trainer.train(llm_config(tiny_corpus, train_list=missing), str(tmp_path / "w1"))

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    synthetic.write_parquet(tiny_corpus.rows[:1], str(empty_dir / "one.parquet"))
    table = pq.read_table(empty_dir / "one.parquet")
    pq.write_table(table.slice(0, 0), empty_dir / "part.parquet")
    os.remove(empty_dir / "one.parquet")
    (empty_dir / "data.list").write_text(str(empty_dir / "part.parquet") + "\n")
    with pytest.raises(ConfigError, match=r"config.data.train_list=.*empty/data.list.*no batches"):
        trainer.train(llm_config(tiny_corpus, train_list=str(empty_dir / "data.list")), str(tmp_path / "w2"))

    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    (corrupt_dir / "part.parquet").write_bytes(b"PAR1" + os.urandom(2048))
    (corrupt_dir / "data.list").write_text(str(corrupt_dir / "part.parquet") + "\n")
    with pytest.raises(ConfigError, match=r"corrupt/part.parquet: not a readable parquet file"):
        trainer.train(llm_config(tiny_corpus, train_list=str(corrupt_dir / "data.list")), str(tmp_path / "w3"))

    with pytest.raises(ConfigError, match=r"config.data.train_list is empty"):
        trainer.train(llm_config(tiny_corpus, train_list=""), str(tmp_path / "w4"))


def test_unknown_config_key_is_one_error_line(tmp_path):
    proc = subprocess.run(
        th.command(tmp_path / "w", ["--config.train.no_such_key=3"]), cwd=th.ROOT, env=th.env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_key" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "w").exists()
