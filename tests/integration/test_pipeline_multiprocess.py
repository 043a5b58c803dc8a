"""Two JAX processes x 4 CPU devices read one corpus: every global step has one shape on both processes, the
global jax.Arrays hold exactly the rows of both local shards, and one epoch covers every utterance once."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import pipeline
from sovits2_jax.data.prep import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from sovits2_jax.parallel.distributed import initialize
    initialize(timeout_s=120)
    import jax, jax.numpy as jnp, numpy as np
    from sovits2_jax.configs import data as data_configs
    from sovits2_jax.data import pipeline
    from sovits2_jax.parallel.mesh import make_mesh
    cfg = data_configs.get_config("llm").data
    for k, v in json.loads({overrides!r}).items():
        setattr(cfg, k, v)
    mesh = make_mesh({{"data": 4, "fsdp": 2, "tensor": 1}})
    batches = pipeline.make_batches(cfg, data_list={data_list!r})  # process index/count from jax
    summary = jax.jit(lambda t, v: (jnp.sum(t * (1 + jnp.arange(t.shape[1]))), jnp.sum(v)))
    steps, utts = [], []
    for arrays in batches.global_batches(mesh, prefetch=0):  # last_meta must belong to this batch
        total, valid = summary(arrays["speech_token"], arrays["valid"].astype(jnp.int32))
        steps.append([list(arrays["speech_token"].shape), int(total), int(valid)])
        utts += [u for u in batches.last_meta["_utts"] if u]
    print("PIPELINE " + json.dumps(dict(process=jax.process_index(), steps=steps, utts=utts)), flush=True)
    """
)


def test_two_processes_feed_one_mesh(tmp_path):
    rows = synthetic.make_rows(40, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=2)
    data_list = synthetic.write_corpus(str(tmp_path), rows, rows_per_file=4)
    overrides = dict(
        worker_count=0, num_epochs=1, bucket_lengths=[32, 48, 64, 80], max_frames_in_batch=320, batch_multiple=4
    )
    child = CHILD.format(root=ROOT, overrides=json.dumps(overrides), data_list=data_list)
    cmd = [sys.executable, "-m", "sovits2_jax.cluster.launch_local", "-n", "2", "--devices_per_process", "4",
           "--timeout_s", "240", "--", sys.executable, "-c", child]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    results = {}
    for line in out.stdout.splitlines():
        if "PIPELINE " in line:
            r = json.loads(line.split("PIPELINE ", 1)[1])
            results[r["process"]] = r
    assert sorted(results) == [0, 1]
    # both processes computed the same global values at every step
    assert results[0]["steps"] == results[1]["steps"]
    utts = results[0]["utts"] + results[1]["utts"]
    assert sorted(utts) == sorted(r["utt"] for r in rows)  # one epoch: every utterance once, on one process
    # the global arrays are the two local shards side by side (simulated here in one process)
    cfg = data_configs.get_config("llm").data
    for k, v in overrides.items():
        setattr(cfg, k, v)
    local = [list(pipeline.make_batches(cfg, data_list=data_list, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(local[0]) == len(local[1]) == len(results[0]["steps"])
    for k, (shape, total, valid) in enumerate(results[0]["steps"]):
        tokens = np.concatenate([local[0][k]["speech_token"], local[1][k]["speech_token"]])
        assert shape == list(tokens.shape)
        assert total == int(np.sum(tokens.astype(np.int64) * (1 + np.arange(tokens.shape[1]))))
        assert valid == int(local[0][k]["valid"].sum() + local[1][k]["valid"].sum())


WORKERS_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})


    def main():
        from absl import flags
        flags.FLAGS.mark_as_parsed()
        from sovits2_jax.configs import data as data_configs
        from sovits2_jax.data import pipeline
        cfg = data_configs.get_config("llm").data
        cfg.update(worker_count=2, worker_buffer_size=4, batch_multiple=1, bucket_lengths=[80], max_frames_in_batch=160)
        batches = pipeline.make_batches(cfg, data_list={data_list!r}, process_index=0, process_count=1)
        for _, batch in zip(range(3), batches):
            assert batch["speech_token"].shape[1] == 80
        batches.close()
        print("CLOSED", flush=True)


    if __name__ == "__main__":
        main()
    """
)


def test_closing_mid_epoch_leaves_no_shared_memory_to_the_resource_tracker(tmp_path):
    # workers run ahead: batches they wrote to shared memory and worker iterators started ahead are unread when a
    # run stops; Python's resource tracker then unlinks them at exit and warns, unless close() freed them
    rows = synthetic.make_rows(40, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=3)
    data_list = synthetic.write_corpus(str(tmp_path), rows, rows_per_file=4)
    script = tmp_path / "child.py"
    script.write_text(WORKERS_CHILD.format(root=ROOT, data_list=data_list))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and "CLOSED" in out.stdout, out.stderr[-3000:]
    assert "leaked" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-3000:]
