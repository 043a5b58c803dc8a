"""The family registry of the input pipeline: one module per ``config.data.kind``, found by name, so a new family
is a new file in ``sovits2_jax/data/tasks/`` and nothing else changes."""

import textwrap

import numpy as np
import pytest

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import pipeline, tasks
from sovits2_jax.data.prep import synthetic
from sovits2_jax.data.tasks import base
from sovits2_jax.validation import ConfigError

TOY = '''
"""A text-only family: text tokens bucketed by their count."""

import numpy as np

from sovits2_jax.data.tasks import base


class ToyTask(base.Task):
    defaults = dict(bucket_lengths=[8, 16, 32], max_frames_in_batch=64)
    reads_speech_token = False
    primary = "text_token"

    def lengths(self, rows, skip):
        return np.maximum(self.index.text_token_len[rows], 1)

    def steps(self):
        return [self.read_tokens]

    def family_fields(self, length):
        return [("text_token", length, (), np.int32)]


TASK = ToyTask
'''


def test_every_family_is_a_task_module():
    assert tasks.kinds() == ("flow", "gpt_sovits2", "hift", "llm", "vits")
    for kind in tasks.kinds():
        task = tasks.get(kind)
        assert issubclass(task, base.Task) and {"bucket_lengths", "max_frames_in_batch"} <= set(task.defaults)
        cfg = data_configs.get_config(kind).data
        assert cfg.kind == kind and list(cfg.bucket_lengths) == list(task.defaults["bucket_lengths"])
        pipeline.validate(cfg)
    known = "flow, gpt_sovits2, hift, llm, vits"
    with pytest.raises(ValueError, match=f"unknown data pipeline 'video'; choose one of {known}"):
        tasks.get("video")


def test_family_keys_are_validated_by_their_task():
    cfg = data_configs.get_config("hift").data
    cfg.bucket_lengths = [51, 64]
    with pytest.raises(ConfigError, match="hift crops to one length"):
        pipeline.validate(cfg)
    cfg = data_configs.get_config("gpt_sovits2").data
    cfg.min_prompts = 4
    with pytest.raises(ConfigError, match=r"config\.data\.min_prompts"):
        pipeline.validate(cfg)
    cfg = data_configs.get_config("flow").data
    cfg.bucket_lengths = [100, 129]
    with pytest.raises(ConfigError, match=r"\[129\] must be multiples of token_mel_ratio=2"):
        pipeline.validate(cfg)


def test_the_frame_budget_is_checked_against_the_lengths_in_use():
    cfg = data_configs.get_config("flow").data  # bucket_lengths up to 2000 frames
    cfg.max_frames_in_batch, cfg.batch_multiple = 960, 1
    with pytest.raises(ConfigError, match=r"length 1000 x batch_multiple 1 exceeds data.max_frames_in_batch=960"):
        pipeline.validate(cfg)
    cfg.num_buckets = 1  # lengths fitted to the corpus (within the budget) replace the configured ones
    pipeline.validate(cfg)


def test_a_new_family_is_one_new_module(tmp_path, monkeypatch):
    (tmp_path / "toy.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(tmp_path)])
    monkeypatch.delitem(__import__("sys").modules, "sovits2_jax.data.tasks.toy", raising=False)
    assert "toy" in tasks.kinds()
    rows = synthetic.make_rows(10, num_speakers=2, min_seconds=1.5, max_seconds=3.0, seed=4)
    data_list = synthetic.write_corpus(str(tmp_path / "corpus"), rows, rows_per_file=5)
    cfg = data_configs.get_config("toy").data
    cfg.worker_count, cfg.num_epochs = 0, 1
    it = pipeline.make_batches(cfg, data_list=data_list, process_index=0, process_count=1)
    seen = {}
    for batch in it:
        assert set(batch) == {"valid", "text_token", "text_token_len"}
        assert batch["text_token"].shape[1] in (8, 16, 32) and batch["text_token"].size <= 64
        for i, utt in enumerate(it.last_meta["_utts"]):
            if utt:
                seen[utt] = batch["text_token"][i, : batch["text_token_len"][i]]
    from sovits2_jax.text.tokenizer import get_tokenizer

    tok = get_tokenizer(cfg.tokenizer)
    assert sorted(seen) == sorted(r["utt"] for r in rows) and not it.skipped
    for r in rows:
        np.testing.assert_array_equal(seen[r["utt"]], tok.encode(r["text"]))
    assert it.dataset.task.padding(batch)[1] == batch["text_token"].size
