"""Unit tests of the pipeline's planning parts: order/sharding, buckets, packing, lockstep, prompts, steps."""

import collections
import io
import itertools
import random

import numpy as np
import pytest
import soundfile as sf

from sovits2_jax.data import batching, order, packing, prompts, steps


def test_shard_groups_disjoint_cover_and_seeded():
    for count in (1, 2, 3, 5):
        parts = order.shard_groups(17, seed=3, epoch=0, shards=count)
        allg = np.concatenate(parts)
        assert sorted(allg) == list(range(17))
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    a = order.shard_groups(17, seed=3, epoch=0, shards=2)
    b = order.shard_groups(17, seed=3, epoch=1, shards=2)
    c = order.shard_groups(17, seed=3, epoch=0, shards=2)
    assert not np.array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], c[0])
    with pytest.raises(ValueError, match="row groups cannot be split into 4 data shards"):
        order.shard_groups(3, seed=0, epoch=0, shards=4)


def test_shards_per_process_are_contiguous_and_divide():
    assert order.num_shards(0, 4) == 4 and order.num_shards(8, 2) == 8
    with pytest.raises(ValueError, match="num_shards=6 is not a multiple of the 4 processes"):
        order.num_shards(6, 4)
    assert [list(order.shards_of(p, 2, 4)) for p in range(2)] == [[0, 1], [2, 3]]
    assert list(order.shards_of(0, 1, 4)) == [0, 1, 2, 3]


def test_shard_order_windows_keep_groups_together():
    rows_of_group = [np.arange(g * 10, g * 10 + 10) for g in range(6)]
    groups = np.asarray([4, 1, 5, 0])
    rows = order.shard_order(rows_of_group, groups, seed=0, epoch=0, shard=0, window_groups=2)
    assert sorted(rows) == sorted(np.concatenate([rows_of_group[g] for g in groups]))
    assert set(rows[:20] // 10) == {4, 1} and set(rows[20:] // 10) == {5, 0}
    full = order.shard_order(rows_of_group, groups, seed=0, epoch=0, shard=0, window_groups=0)
    assert len(set(full[:20] // 10)) > 2  # one window: rows of all groups mixed


def test_buckets_respect_budget_and_multiple():
    buckets = batching.make_buckets([100, 50, 200, 100], 1000, batch_multiple=4)
    assert [(b.batch, b.length) for b in buckets] == [(20, 50), (8, 100), (4, 200)]
    with pytest.raises(ValueError, match=r"data\.max_frames_in_batch=1000"):
        batching.make_buckets([300], 1000, batch_multiple=4)
    lengths = batching.geometric_lengths(100, 1000, 1.25, 2)
    assert lengths[0] == 100 and lengths[-1] == 1000 and all(x % 2 == 0 for x in lengths)
    assert all(b > a for a, b in itertools.pairwise(lengths))
    np.testing.assert_array_equal(batching.bucket_ids(np.asarray([1, 50, 51, 200, 201]), buckets), [0, 0, 1, 2, -1])


def test_bucket_plan_every_example_once_in_smallest_fitting_bucket():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 260, size=500)
    buckets = batching.make_buckets([50, 100, 200, 250], 1000)
    examples = [(i,) for i in range(500)]
    plan = batching.bucket_plan(examples, lengths, buckets, drop_remainder=False)
    seen = collections.Counter()
    full = 0
    for b, slots in plan:
        assert 1 <= len(slots) <= buckets[b].batch
        full += len(slots) == buckets[b].batch
        for (i,) in (s[0] for s in slots):
            seen[i] += 1
            assert lengths[i] <= buckets[b].length
            assert b == 0 or lengths[i] > buckets[b - 1].length
    assert sorted(seen) == [i for i in range(500) if lengths[i] <= 250] and max(seen.values()) == 1
    assert full >= len(plan) - len(buckets)  # at most one partial batch per bucket
    dropped = batching.bucket_plan(examples, lengths, buckets, drop_remainder=True)
    assert all(len(s) == buckets[b].batch for b, s in dropped)


def test_pack_plan_fills_rows_without_overflow():
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 300, size=300)
    bucket = batching.Bucket(4, 512)
    examples = [(i,) for i in range(300)]
    plan = batching.pack_plan(examples, lengths, bucket, drop_remainder=False)
    used, seen = 0, []
    for _, rows in plan:
        assert len(rows) == 4
        for row in rows:
            n = sum(lengths[ex[0]] for ex in row)
            assert n <= 512
            used += n
            seen += [ex[0] for ex in row]
    assert sorted(seen) == list(range(300))
    assert used / (len(plan) * 4 * 512) > 0.8


def test_lockstep_aligns_shapes_and_keeps_every_local_batch():
    plans = [
        [(0, ["a0"]), (1, ["a1"]), (0, ["a2"]), (2, ["a3"])],
        [(1, ["b0"]), (1, ["b1"]), (0, ["b2"])],
        [],
    ]
    merged = batching.lockstep(plans)
    for _b, slots in merged:
        assert len(slots) == 3 and slots[2] is None
    got = [[s for _, slots in merged if (s := slots[p]) is not None] for p in range(2)]
    assert sorted(map(tuple, got[0])) == sorted(map(tuple, [x for _, x in plans[0]]))
    assert sorted(map(tuple, got[1])) == sorted(map(tuple, [x for _, x in plans[1]]))
    for p in range(2):  # each process reads its batches of one bucket in its own order
        for bucket in (0, 1):
            mine = [slots[p] for b, slots in merged if b == bucket and slots[p] is not None]
            assert mine == [x for b, x in plans[p] if b == bucket]
    assert len(merged) == 2 + 2 + 1  # bucket 0: max(2, 1), bucket 1: max(1, 2), bucket 2: 1


def test_pack_rows_segments_and_positions():
    from sovits2_jax.text.layouts import IGNORE_ID, PAD

    a = packing.gpt_sovits2_example([[5, 6], [7]], [[1, 2, 3], [4, 4]], speech_token_size=100)
    b = packing.gpt_sovits2_example([[8, 9, 10], [11, 12]], [[6], [7, 7, 7]], speech_token_size=100)
    assert len(a["kinds"]) == packing.gpt_sovits2_length([2, 1], [3, 2])
    assert len(b["kinds"]) == packing.gpt_sovits2_length([3, 2], [1, 3])
    out = packing.pack_rows([[a, None, b], []], 32)
    n_a, n_b = len(a["kinds"]), len(b["kinds"])
    np.testing.assert_array_equal(out["segment_ids"][0, : n_a + n_b], [1] * n_a + [2] * n_b)
    np.testing.assert_array_equal(out["positions"][0, n_a : n_a + n_b], np.arange(n_b))
    np.testing.assert_array_equal(out["ids"][0, n_a : n_a + n_b], b["ids"])
    np.testing.assert_array_equal(out["text_segments"][0, :n_a], a["text_segments"])
    tb = out["text_segments"][0, n_a : n_a + n_b]
    np.testing.assert_array_equal(tb, np.where(b["text_segments"] > 0, b["text_segments"] + 2, 0))
    assert out["lengths"].tolist() == [n_a + n_b, 0] and out["num_segments"].tolist() == [2, 0]
    assert np.all(out["kinds"][1] == PAD) and np.all(out["targets"][1] == IGNORE_ID)
    with pytest.raises(ValueError, match="more than 10"):
        packing.pack_rows([[a]], 10)


def test_speaker_prompts_same_speaker_never_target():
    spk = np.asarray([0, 1, 0, 0, 2, 1, 0, 3, 0])
    group = np.asarray([0, 0, 0, 1, 1, 1, 1, 2, 2])
    sr = prompts.SpeakerRows(spk, group)
    rng = random.Random(0)
    counts = collections.Counter()
    for _ in range(200):
        for target in range(len(spk)):
            refs = sr.draw(rng, target, min_prompts=1, max_prompts=3)
            if spk[target] in (2, 3):  # speakers with a single utterance have no prompt
                assert refs is None
                continue
            assert target not in refs and len(set(refs)) == len(refs) and 1 <= len(refs) <= 3
            assert all(spk[r] == spk[target] for r in refs)
            counts[len(refs)] += 1
    assert set(counts) == {1, 2, 3}
    assert sr.draw(rng, 1, min_prompts=2, max_prompts=3) is None  # speaker 1 has only one other row
    # one prompt comes from the target's own row group when it has another row of the speaker
    assert {sr.draw(rng, 3, min_prompts=1, max_prompts=1) for _ in range(50)} == {(6,)}
    spread = {sr.draw(rng, 0, min_prompts=1, max_prompts=1) for _ in range(200)}
    assert spread == {(2,)}  # row 2 shares row group 0 with row 0
    usable = np.ones(len(spk), bool)
    usable[6] = False
    sr2 = prompts.SpeakerRows(spk, group, usable=usable)
    got = {sr2.draw(rng, 3, min_prompts=1, max_prompts=1) for _ in range(200)}
    assert got == {(0,), (2,), (8,)}  # row 6 is never a prompt; the rest of the speaker is used


def test_flow_prompt_len_distribution():
    rng = np.random.default_rng(0)
    draws = np.asarray([prompts.flow_prompt_len(rng, 100) for _ in range(4000)])
    assert draws.min() >= 0 and draws.max() <= 30
    assert abs(np.mean(draws == 0) - (0.5 + 0.5 / 31)) < 0.03
    assert abs(draws[draws > 0].mean() - 15.5) < 1.0


def _wav(seconds=1.0, sr=24000, channels=1):
    x = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sr)) / sr).astype(np.float32)
    x = np.stack([x, -x], 1) if channels == 2 else x
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_decode_and_corrupt_audio():
    s = steps.decode_audio({"audio_data": _wav(0.5, 16000, channels=2)})
    assert s["sample_rate"] == 16000 and s["speech"].shape == (8000,)
    assert np.max(np.abs(s["speech"])) < 1e-3  # channel mean of x and -x
    for bad in (b"", b"RIFF\x00\x00garbage", None):
        with pytest.raises(steps.SkipSample):
            steps.decode_audio({"audio_data": bad})


def test_filter_matches_cosyvoice_rules():
    base = dict(speech=np.zeros(24000, np.float32), sample_rate=24000, text_token=np.ones(10), speech_token=[1])
    kw = dict(max_length=200, min_length=50, token_max_length=20, token_min_length=2,
              min_output_input_ratio=0.01, max_output_input_ratio=0.5)  # fmt: skip
    assert steps.filter_lengths(dict(base), **kw)  # 100 frames of 10 ms, 10 tokens, ratio 0.1
    cases = {
        "too short": dict(speech=np.zeros(11000, np.float32)),
        "too long": dict(speech=np.zeros(48500, np.float32)),
        "too few text tokens": dict(text_token=np.ones(1)),
        "too many text tokens": dict(text_token=np.ones(21)),
        "text/audio ratio out of bounds": dict(speech=np.zeros(24000 * 2 - 100, np.float32), text_token=np.ones(1)),
    }
    kw_ratio = dict(kw, token_min_length=1)
    for reason, change in cases.items():
        with pytest.raises(steps.SkipSample, match=reason.replace("/", ".")):
            steps.filter_lengths({**base, **change}, **(kw_ratio if "ratio" in reason else kw))


def test_resample_truncate_and_embeddings():
    s = steps.resample({"speech": np.full(16000, 2.0, np.float32), "sample_rate": 16000},
                       sample_rate=24000, min_sample_rate=16000)  # fmt: skip
    assert s["sample_rate"] == 24000 and abs(len(s["speech"]) - 24000) <= 1 and np.max(np.abs(s["speech"])) <= 1.0
    with pytest.raises(steps.SkipSample, match="sample rate too low"):
        steps.resample({"speech": np.zeros(8000), "sample_rate": 8000}, sample_rate=24000, min_sample_rate=16000)
    wav = np.arange(1000, dtype=np.float32)
    a = steps.truncate({"speech": wav}, length=300, rng=np.random.default_rng(4))["speech"]
    b = steps.truncate({"speech": wav}, length=300, rng=np.random.default_rng(4))["speech"]
    np.testing.assert_array_equal(a, b)
    assert len(a) == 300 and np.all(np.diff(a) == 1)  # a contiguous crop
    padded = steps.truncate({"speech": wav[:100]}, length=300, rng=np.random.default_rng(0))["speech"]
    assert len(padded) == 300 and np.all(padded[100:] == 0)
    e = np.arange(1, 5, dtype=np.float64)
    s = steps.parse_embedding({"utt_embedding": e, "spk_embedding": 2 * e}, normalize=True, dim=4,
                              use_spk_embedding=True)  # fmt: skip
    np.testing.assert_allclose(s["embedding"], e / np.linalg.norm(e), rtol=1e-6)
    for bad, reason in (([np.nan] * 4, "non-finite"), ([0.0] * 4, "zero"), ([1.0] * 3, "size mismatch")):
        with pytest.raises(steps.SkipSample, match=reason):
            steps.parse_embedding({"utt_embedding": bad, "spk_embedding": e}, normalize=True, dim=4,
                                  use_spk_embedding=False)  # fmt: skip


def test_compute_mel_cuts_to_whole_tokens():
    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram_np

    wav = 0.1 * np.sin(np.arange(24000 * 2) * 0.05).astype(np.float32)
    full = mel_spectrogram_np(wav)
    s = steps.compute_mel({"speech": wav, "speech_token": np.arange(30)}, mel_config=MelConfig(), token_mel_ratio=2)
    assert s["speech_feat"].shape == (60, 80) and len(s["speech_token"]) == 30
    np.testing.assert_array_equal(s["speech_feat"], full[:60])
    s = steps.compute_mel({"speech": wav, "speech_token": np.arange(500)}, mel_config=MelConfig(), token_mel_ratio=2)
    assert s["speech_feat"].shape[0] == 2 * (full.shape[0] // 2) and len(s["speech_token"]) == full.shape[0] // 2


def test_data_list_and_index_errors_name_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sovits2_jax.data import source

    with pytest.raises(FileNotFoundError, match=r"nope\.list"):
        source.read_data_list(str(tmp_path / "nope.list"))
    (tmp_path / "d.list").write_text("missing.parquet\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        source.read_data_list(str(tmp_path / "d.list"))
    pq.write_table(pa.table({"utt": ["a"], "text": ["x"]}), tmp_path / "nospk.parquet")
    with pytest.raises(ValueError, match=r"nospk\.parquet: parquet lacks column\(s\) \['spk'\]"):
        source.build_index([str(tmp_path / "nospk.parquet")])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"junk\.parquet: not a readable parquet file"):
        source.build_index([str(tmp_path / "junk.parquet")])
    pq.write_table(pa.table({"utt": ["a", "b", "c"], "spk": ["s", "s", "t"], "speech_token": [[1, 2], [], [3]]}),
                   tmp_path / "ok.parquet", row_group_size=2)  # fmt: skip
    index = source.build_index([str(tmp_path / "ok.parquet")])
    assert index.num_groups == 2 and index.speech_token_len.tolist() == [2, 0, 1]
    assert index.group.tolist() == [0, 0, 1] and index.row.tolist() == [0, 1, 0] and index.speakers == ["s", "t"]
    reader = source.RowReader(index, ("utt", "speech_token"))
    assert reader.read(2)["utt"] == "c" and reader.read(2)["speech_token"].tolist() == [3]
    with pytest.raises(ValueError, match=r"lack column\(s\) \['audio_data'\]"):
        source.RowReader(index, ("utt", "audio_data"))


def test_fitted_bucket_lengths_are_optimal():
    def padding(lengths, buckets):
        ids = batching.bucket_ids(lengths, [batching.Bucket(1, b) for b in buckets])
        assert np.all(ids >= 0)
        return int(np.sum(np.asarray(buckets)[ids] - lengths))

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    fitted = batching.fit_bucket_lengths(lengths, 3)
    assert len(fitted) == 3 and fitted[-1] == lengths.max()
    values = np.unique(lengths)
    best = min(
        padding(lengths, [a, b, values[-1]]) for i, a in enumerate(values[:-1]) for b in values[i + 1 : -1]
    )  # brute force over every choice of the two shorter buckets
    assert padding(lengths, fitted) == best
    even = batching.fit_bucket_lengths(rng.integers(50, 1000, size=3000), 8, multiple=2)
    assert all(x % 2 == 0 for x in even) and len(even) == 8
    geometric = [100, 160, 256, 400, 640, 1000]
    uniform = rng.integers(100, 1001, size=3000)
    assert padding(uniform, batching.fit_bucket_lengths(uniform, 6)) < 0.8 * padding(uniform, geometric)


def test_device_prefetch_keeps_order_and_items():
    from sovits2_jax.data.mesh_feed import prefetch

    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield i

    it = prefetch(source(), 2)
    assert next(it) == 0 and pulled == [0, 1, 2]  # two batches ahead of the consumer
    assert list(it) == [1, 2, 3, 4]
    assert list(prefetch(iter([]), 3)) == []


def test_gpt_sovits2_length_is_the_sum_of_blocks():
    for texts, speeches in (([3], [7]), ([2, 5], [4, 1]), ([1, 1, 9], [6, 2, 3])):
        ex = packing.gpt_sovits2_example([[1] * t for t in texts], [[2] * s for s in speeches], speech_token_size=9)
        assert len(ex["kinds"]) == packing.gpt_sovits2_length(texts, speeches)
        assert len(ex["kinds"]) == sum(t + s + 2 for t, s in zip(texts, speeches))
