"""The gpt_sovits2 data task with several codebooks per frame: batches carry each utterance's codes from the
``grvq_codes`` column (codebook 0 as the speech ids, the others as codes_extra / targets_extra), and a shard without
the column or with another number of codebooks is refused."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import code_columns, pipeline
from sovits2_jax.data.prep import synthetic
from sovits2_jax.text.layouts import IGNORE_ID, SPEECH
from sovits2_jax.validation import ConfigError

K, VOCAB = 3, 64


def _codes(n: int, seed: int) -> list[list[int]]:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(K, n)).tolist()


def _corpus(root, k: int = K, column: str = code_columns.COLUMN):
    """Shards whose speech is only the codes column (no speech_token), of lengths unrelated to the audio."""
    rows = synthetic.make_rows(12, num_speakers=3, min_seconds=1.0, max_seconds=2.0, seed=3)
    data_list = synthetic.write_corpus(str(root), rows, rows_per_file=4)
    codes = {}
    for path in Path(data_list).read_text().split():
        table = pq.read_table(path)
        values = []
        for utt in table.column("utt").to_pylist():
            codes[utt] = np.asarray(_codes(5 + 7 * len(codes) % 40, seed=len(codes)))[:k]
            values.append(codes[utt].tolist())
        table = table.drop_columns(["speech_token"])
        table = table.append_column(column, pa.array(values, type=pa.list_(pa.list_(pa.int32()))))
        pq.write_table(table, path)
    return data_list, codes


def _config(**extra):
    cfg = data_configs.get_config("gpt_sovits2").data
    values = dict(worker_count=0, num_epochs=1, read_threads=1, bucket_lengths=[300], max_frames_in_batch=900,
                  num_codebooks=K, speech_token_size=VOCAB, **extra)  # fmt: skip
    for key, v in values.items():
        setattr(cfg, key, v)
    return cfg


def _blocks(kinds, ids):
    """Contiguous speech runs of a segment, split after each eos: [(positions of the speech ids), ...]."""
    out, run = [], []
    for p in np.flatnonzero(kinds == SPEECH):
        if run and p != run[-1] + 1:
            out.append(run)
            run = []
        run.append(p)
        if ids[p] == VOCAB:  # eos closes a reference block
            out.append(run[:-1])
            run = []
    return out + ([run] if run else [])


def test_batches_carry_each_utterances_codes(tmp_path):
    data_list, codes = _corpus(tmp_path)
    batches = pipeline.make_batches(_config(), data_list=data_list, process_index=0, process_count=1)
    by_first = {tuple(c[0]): c for c in codes.values()}
    targets_seen = 0
    for batch in batches:
        assert batch["codes_extra"].shape == (*batch["kinds"].shape, K - 1)
        assert batch["targets_extra"].shape == (*batch["kinds"].shape, K - 1)
        for b, utts in enumerate(batches.last_meta["_utts"]):
            for s, utt in enumerate(utts, start=1):
                pos = np.flatnonzero(batch["segment_ids"][b] == s)
                kinds, ids = batch["kinds"][b, pos], batch["ids"][b, pos]
                extra, tx = batch["codes_extra"][b, pos], batch["targets_extra"][b, pos]
                blocks = _blocks(kinds, ids)
                for block in blocks:  # every speech block (references too) is one utterance's K rows
                    want = by_first[tuple(ids[block])]
                    np.testing.assert_array_equal(extra[block], want[1:].T)
                assert np.all(extra[kinds != SPEECH] == IGNORE_ID) and np.all(extra[ids == VOCAB] == IGNORE_ID)
                # the target: its codebook 0 (and eos) in targets, the others in targets_extra
                tg = batch["targets"][b, pos]
                np.testing.assert_array_equal(ids[blocks[-1]], codes[utt][0])
                np.testing.assert_array_equal(tg[tg >= 0], [*codes[utt][0], VOCAB])
                np.testing.assert_array_equal(tx[(tg >= 0) & (tg != VOCAB)], codes[utt][1:].T)
                assert np.all(tx[(tg < 0) | (tg == VOCAB)] == IGNORE_ID)
                targets_seen += 1
    assert targets_seen == len(codes)


def test_shards_without_the_codes_or_with_another_k_are_refused(tmp_path):
    plain = synthetic.write_corpus(str(tmp_path / "plain"), synthetic.make_rows(4, num_speakers=2, seed=1),
                                   rows_per_file=4)  # fmt: skip
    with pytest.raises(ConfigError, match=r"no 'grvq_codes' column .* config\.data\.num_codebooks=3"):
        pipeline.build_dataset(_config(), data_list=plain, process_index=0, process_count=1)
    two, _ = _corpus(tmp_path / "two", k=2)
    with pytest.raises(ConfigError, match=r"config\.data\.num_codebooks=3 but .* holds 2 codebooks in 'grvq_codes'"):
        pipeline.build_dataset(_config(), data_list=two, process_index=0, process_count=1)
    other, _ = _corpus(tmp_path / "other", column="codes")
    pipeline.build_dataset(_config(codes_column="codes"), data_list=other, process_index=0, process_count=1)


def test_the_family_needs_matching_codebook_counts():
    from sovits2_jax.configs import gpt_sovits2
    from sovits2_jax.train.families import gpt_sovits2_ar

    config = gpt_sovits2.get_config("ar_tiny")
    config.model.num_codebooks = 2
    with pytest.raises(ConfigError, match=r"config\.data\.num_codebooks=1 must equal config\.model\.num_codebooks=2"):
        gpt_sovits2_ar.FAMILY.players(config)
    config.data.num_codebooks = 2
    config.model.speech_token_size = config.data.speech_token_size = VOCAB
    config.model.extra_codebook_size = 100
    assert len(gpt_sovits2_ar.FAMILY.players(config)) == 1
    config.model.extra_codebook_size = 32
    with pytest.raises(ConfigError, match=r"config\.model\.extra_codebook_size=32 is below"):
        gpt_sovits2_ar.FAMILY.players(config)
