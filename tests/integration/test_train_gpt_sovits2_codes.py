"""The real trainer on the tiny GPT-SoVITS2 AR with two codebooks per frame: two steps on a corpus with a
``grvq_codes`` column, logging each head's accuracy and CE, and a checkpoint holding the extra codebooks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import train_helpers as th

from sovits2_jax.data import code_columns
from sovits2_jax.data.prep import synthetic

K, VOCAB = 2, 64


def _corpus(root: Path, rows) -> str:
    data_list = synthetic.write_corpus(str(root), rows, rows_per_file=4)
    rng = np.random.default_rng(0)
    for path in Path(data_list).read_text().split():
        table = pq.read_table(path)
        values = [rng.integers(0, VOCAB, size=(K, len(t))).tolist() for t in table.column("speech_token").to_pylist()]
        pq.write_table(table.append_column(code_columns.COLUMN, pa.array(values, pa.list_(pa.list_(pa.int32())))), path)
    return data_list


def test_ar_trains_on_two_codebooks(tmp_path):
    rows = synthetic.make_rows(12, num_speakers=2, min_seconds=1.0, max_seconds=2.0, seed=4)
    train, dev = _corpus(tmp_path / "train", rows[:8]), _corpus(tmp_path / "dev", rows[8:])
    overrides = {"data.train_list": train, "data.dev_list": dev, "data.num_codebooks": K, "model.num_codebooks": K,
                 "data.speech_token_size": VOCAB, "model.speech_token_size": VOCAB, "data.max_frames_in_batch": 512,
                 "train.num_steps": 2, "train.log_every": 1, "train.eval_every": 0,
                 "train.checkpoint_every": 2}  # fmt: skip
    workdir = tmp_path / "ar"
    proc = th.run(workdir, [f"--config.{k}={v}" for k, v in overrides.items()], config="configs/gpt_sovits2.py:ar_tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_records = [r for r in th.read_metrics(workdir) if "train/loss" in r]
    assert [r["step"] for r in train_records] == [1, 2]
    for r in train_records:
        assert r["train/skipped_steps"] == 0 and 0 <= r["train/acc_cb1"] <= 1
        # two heads of 64-65 ids, near uniform at init: each CE near log(64), the loss their sum
        assert math.isclose(r["train/loss"], r["train/loss_cb0"] + r["train/loss_cb1"], rel_tol=1e-4)
        assert 3.0 < r["train/loss_cb1"] < 6.0
    import orbax.checkpoint as ocp

    params = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "2" / "params")["model"]
    assert params["codebooks"]["embedding"].shape[:2] == (K - 1, VOCAB)
    assert params["speech_embedding"]["embedding"].shape[0] == VOCAB + 3
    # the checkpoint loads as a part (what inference and init.path read) with its codebook count
    from sovits2_jax.convert import parts

    loaded, cfg = parts.load(workdir, "llm")
    assert cfg.num_codebooks == K and loaded["codebooks"]["kernel"].shape == (K - 1, cfg.backbone.hidden_size, VOCAB)
