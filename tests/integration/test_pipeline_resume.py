"""Iterator state: saved after k batches (with mp_prefetch workers) and restored in a new process, or saved by an
Orbax CheckpointManager next to the model's params, the next batches equal the uninterrupted run's."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import iterator_state, pipeline
from sovits2_jax.data.prep import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = {
    "flow": dict(bucket_lengths=[60, 80, 100, 120, 150], max_frames_in_batch=600),
    "llm": dict(bucket_lengths=[30, 45, 60, 80], max_frames_in_batch=240),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = synthetic.make_rows(36, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=1)
    return synthetic.write_corpus(str(tmp_path_factory.mktemp("ours")), rows, rows_per_file=4)


def overrides_for(kind, **overrides):
    return {"worker_count": 0, "num_epochs": 1, "read_threads": 2, **SMALL.get(kind, {}), **overrides}


def config(kind, **overrides):
    cfg = data_configs.get_config(kind).data
    for k, v in overrides_for(kind, **overrides).items():
        setattr(cfg, k, v)
    return cfg


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_resume_in_new_process_with_mp_prefetch(corpus, tmp_path):
    changes = overrides_for("flow", worker_count=2, num_epochs=2)
    cfg = config("flow", **changes)
    it = pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)
    try:
        for _ in range(3):
            next(it)
        iterator_state.save(tmp_path / "state", it)
        expected = [next(it) for _ in range(4)]
    finally:
        it.close()
    assert os.path.isfile(tmp_path / "state" / "process_0-of-1.json")
    script = textwrap.dedent(
        f"""
        import json, pickle, sys
        sys.path.insert(0, {ROOT!r})
        from sovits2_jax.configs import data as data_configs
        from sovits2_jax.data import iterator_state, pipeline
        cfg = data_configs.get_config("flow").data
        for k, v in json.loads({json.dumps(changes)!r}).items():
            setattr(cfg, k, v)
        it = pipeline.make_batches(cfg, data_list={corpus!r}, process_index=0, process_count=1)
        iterator_state.restore({str(tmp_path / "state")!r}, it)
        out = [next(it) for _ in range(4)]
        it.close()
        pickle.dump(out, open({str(tmp_path / "out.pkl")!r}, "wb"))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=600)  # a loaded 2-core machine
    import pickle

    with open(tmp_path / "out.pkl", "rb") as f:
        restored = pickle.load(f)
    assert_same(expected, restored)


def test_iterator_state_in_orbax_checkpoint_manager_next_to_params(corpus, tmp_path):
    import orbax.checkpoint as ocp
    from etils import epath

    cfg = config("llm", num_epochs=3)
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    it = pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)
    for _ in range(5):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("params", "data")) as mngr:
        mngr.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             data=iterator_state.orbax_save_args(it)))  # fmt: skip
        mngr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    fresh = pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("params", "data")) as mngr:
        assert mngr.latest_step() == 7
        got = mngr.restore(7, args=ocp.args.Composite(params=ocp.args.StandardRestore(params),
                                                      data=iterator_state.orbax_restore_args(fresh)))  # fmt: skip
    np.testing.assert_array_equal(got["params"]["w"], params["w"])
    assert_same(expected, [next(fresh) for _ in range(3)])
    data_dir = tmp_path / "ckpt" / "7" / "data"
    assert sorted(p.name for p in data_dir.glob("*.json")) == ["process_0-of-1.json"]  # grain's layout

    # as if written by 2 processes (same position: every process reads its shards of the same step): restores
    # here; positions that disagree are refused with the reason
    state = (data_dir / "process_0-of-1.json").read_text()
    (data_dir / "process_0-of-1.json").unlink()
    for p in range(2):
        (data_dir / f"process_{p}-of-2.json").write_text(state)
    other = pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)
    iterator_state.PositionHandler().restore(epath.Path(data_dir), args=iterator_state.orbax_restore_args(other))
    assert_same(expected, [next(other) for _ in range(3)])
    (data_dir / "process_1-of-2.json").write_text(state.replace("5", "6"))
    with pytest.raises(ValueError, match="different data positions, so it restores only on 2 processes"):
        iterator_state.PositionHandler().restore(epath.Path(data_dir), args=iterator_state.orbax_restore_args(other))
