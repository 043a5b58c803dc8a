"""End-to-end Grain pipeline tests on small synthetic Parquet corpora (real WAV bytes, CosyVoice schema)."""

import collections
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sovits2_jax.configs import data as data_configs
from sovits2_jax.data import pipeline
from sovits2_jax.data.prep import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_ROWS = 36


@pytest.fixture(scope="module")
def rows():
    return synthetic.make_rows(NUM_ROWS, num_speakers=4, min_seconds=1.0, max_seconds=3.0, seed=1)


@pytest.fixture(scope="module")
def corpus(rows, tmp_path_factory):
    return synthetic.write_corpus(str(tmp_path_factory.mktemp("ours")), rows, rows_per_file=4)


SMALL = {
    "flow": dict(bucket_lengths=[60, 80, 100, 120, 150], max_frames_in_batch=600),
    "llm": dict(bucket_lengths=[30, 45, 60, 80], max_frames_in_batch=240),
    "gpt_sovits2": dict(bucket_lengths=[400], max_frames_in_batch=1600),
}


def overrides_for(kind, **overrides):
    return {"worker_count": 0, "num_epochs": 1, "read_threads": 2, **SMALL.get(kind, {}), **overrides}


def config(kind, **overrides):
    cfg = data_configs.get_config(kind).data
    for k, v in overrides_for(kind, **overrides).items():
        setattr(cfg, k, v)
    return cfg


def read_all(cfg, data_list, **kw):
    it = pipeline.make_batches(cfg, data_list=data_list, **kw)
    out = []
    for batch in it:
        out.append((batch, dict(it.last_meta)))
    return out, it


def assert_same(a, b):
    assert len(a) == len(b)
    for (x, _), (y, _) in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_flow_batches_deterministic_in_budget_and_buckets(corpus):
    cfg = config("flow")
    first, it = read_all(cfg, corpus)
    again, _ = read_all(cfg, corpus)
    assert_same(first, again)
    other, _ = read_all(config("flow", seed=5), corpus)
    assert [m["_utts"] for _, m in first] != [m["_utts"] for _, m in other]
    allowed = {(b.batch, b.length) for b in it.dataset.buckets}
    seen = collections.Counter()
    for batch, meta in first:
        b, length = batch["speech_feat"].shape[:2]
        assert (b, length) in allowed
        assert b * length <= cfg.max_frames_in_batch
        assert batch["speech_token"].shape == (b, length // 2)
        v = batch["valid"]
        np.testing.assert_array_equal(batch["speech_feat_len"][v], 2 * batch["speech_token_len"][v])
        assert np.all(batch["speech_feat_len"][v] <= length)
        assert np.all(batch["speech_feat"][~v] == 0)
        # padded frames are zero, real frames are log-mel values (clipped at log(1e-5))
        for i in np.flatnonzero(v):
            n = batch["speech_feat_len"][i]
            assert np.all(batch["speech_feat"][i, n:] == 0) and np.all(batch["speech_feat"][i, :n] >= np.log(1e-5))
        np.testing.assert_allclose(np.linalg.norm(batch["embedding"][v], axis=-1), 1.0, rtol=1e-5)
        assert np.all(batch["cond_len"][v] <= np.floor(0.3 * batch["speech_feat_len"][v]))
        seen.update(u for u in meta["_utts"] if u)
    assert len(seen) == NUM_ROWS and max(seen.values()) == 1  # one epoch: every row once


def test_flow_mel_matches_direct_computation(corpus, rows):
    from sovits2_jax.audio.mel import mel_spectrogram_np

    batches, _ = read_all(config("flow"), corpus)
    by_utt = {r["utt"]: r for r in rows}
    batch, meta = batches[0]
    i = int(np.flatnonzero(batch["valid"])[0])
    row = by_utt[meta["_utts"][i]]
    import io

    import soundfile as sf

    wav, _ = sf.read(io.BytesIO(row["audio_data"]), dtype="float32")
    ref = mel_spectrogram_np(wav)
    n_tok = min(ref.shape[0] // 2, len(row["speech_token"]))
    n = batch["speech_feat_len"][i]
    assert n == 2 * n_tok
    np.testing.assert_allclose(batch["speech_feat"][i, :n], ref[:n], atol=1e-5)
    np.testing.assert_array_equal(batch["speech_token"][i, :n_tok], row["speech_token"][:n_tok])
    emb = np.asarray(row["utt_embedding"], np.float32)
    np.testing.assert_allclose(batch["embedding"][i], emb / np.linalg.norm(emb), rtol=1e-5)


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_disjoint_cover_and_lockstep_shapes(corpus, count):
    per_process = [read_all(config("llm"), corpus, process_index=p, process_count=count)[0] for p in range(count)]
    steps = {len(b) for b in per_process}
    assert len(steps) == 1, "every process must see the same number of global steps"
    utts = collections.Counter()
    for p in range(count):
        for _, meta in per_process[p]:
            utts.update(u for u in meta["_utts"] if u)
    assert len(utts) == NUM_ROWS and max(utts.values()) == 1  # none lost, none duplicated
    for k in range(steps.pop()):
        shapes = {tuple(per_process[p][k][0]["speech_token"].shape) for p in range(count)}
        assert len(shapes) == 1, f"step {k}: processes disagree on the batch shape {shapes}"


def test_llm_batch_contents(corpus, rows):
    from sovits2_jax.text.tokenizer import get_tokenizer

    tok = get_tokenizer("cosyvoice2")
    by_utt = {r["utt"]: r for r in rows}
    cfg = config("llm")
    batches, _ = read_all(cfg, corpus)
    for batch, meta in batches:
        b, ls = batch["speech_token"].shape
        assert b * ls <= cfg.max_frames_in_batch
        for i, utt in enumerate(meta["_utts"]):
            if not utt:
                continue
            want = tok.encode(by_utt[utt]["text"])
            assert batch["text_token_len"][i] == len(want)
            np.testing.assert_array_equal(batch["text_token"][i, : len(want)], want)
            np.testing.assert_array_equal(
                batch["speech_token"][i, : batch["speech_token_len"][i]], by_utt[utt]["speech_token"]
            )


def test_cosyvoice_tools_layout_reads_like_ours(rows, corpus, tmp_path):
    theirs = synthetic.write_corpus(str(tmp_path / "theirs"), rows, rows_per_file=4, layout="cosyvoice")
    schema = pq.read_schema(os.path.join(tmp_path, "theirs", "parquet_000000000.tar"))
    assert schema.field("utt_embedding").type == pa.list_(pa.float32())  # not our float64 lists
    assert b"pandas" in schema.metadata
    for kind in ("flow", "llm"):
        ours, _ = read_all(config(kind), corpus)
        them, _ = read_all(config(kind), theirs)
        assert_same(ours, them)


def _corrupt_rows(rows):
    bad = [dict(r) for r in rows[:12]]
    bad[1]["audio_data"] = b"RIFF not really a wav file"
    bad[4]["utt_embedding"] = np.full(192, np.nan)
    bad[6]["speech_token"] = np.zeros(0, np.int64)
    bad[9]["text"] = ""
    return bad


def test_corrupt_rows_skipped_and_counted(rows, tmp_path):
    data_list = synthetic.write_corpus(str(tmp_path / "bad"), _corrupt_rows(rows), rows_per_file=4)
    batches, it = read_all(config("flow"), data_list)
    seen = [u for _, m in batches for u in m["_utts"] if u]
    assert len(seen) == 12 - 4
    assert dict(it.skipped) == {
        "unreadable audio": 1,
        "non-finite embedding": 1,
        "empty speech tokens": 1,
        "too few text tokens": 1,
    }
    for batch, _ in batches:
        assert np.all(np.isfinite(batch["embedding"]))
    # rows the index already shows to be unusable are never planned (no padding row is spent on them)
    planned = {it.dataset.index.utt[ex[-1]] for ex in it.dataset.examples(0)}
    bad = _corrupt_rows(rows)
    assert bad[6]["utt"] not in planned and bad[9]["utt"] not in planned
    assert bad[1]["utt"] in planned and bad[4]["utt"] in planned  # found out only when read


def test_gpt_sovits2_packing_prompts_and_segment_masks(corpus, rows):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sovits2_jax.models import qwen2, speech_lm
    from sovits2_jax.text.tokenizer import get_tokenizer

    cfg = config("gpt_sovits2")
    ds = pipeline.build_dataset(cfg, data_list=corpus, process_index=0, process_count=1)
    spk = {r["utt"]: r["spk"] for r in rows}
    n_examples = 0
    for ex in ds.examples(0):
        utts = [ds.index.utt[r] for r in ex]
        assert 1 <= len(ex) - 1 <= cfg.max_prompts
        assert ex[-1] not in ex[:-1] and len(set(ex)) == len(ex)
        assert {spk[u] for u in utts} == {spk[utts[-1]]}
        n_examples += 1
    assert n_examples == NUM_ROWS
    batches, _ = read_all(cfg, corpus)
    tok = get_tokenizer("cosyvoice2")
    by_utt = {r["utt"]: r for r in rows}
    batch, meta = batches[0]
    assert batch["kinds"].shape == (cfg.max_frames_in_batch // 400, 400)
    assert np.mean(batch["segment_ids"] > 0) > 0.6  # packing fills rows
    # the last text block of each segment is its target's text; targets end with the target's speech + eos
    row0 = batch["segment_ids"][0]
    for s, utt in enumerate(meta["_utts"][0], start=1):
        pos = np.flatnonzero(row0 == s)
        kinds, ids, tg = batch["kinds"][0, pos], batch["ids"][0, pos], batch["targets"][0, pos]
        want_speech = list(by_utt[utt]["speech_token"])
        assert list(tg[tg >= 0]) == [*want_speech, cfg.speech_token_size]
        np.testing.assert_array_equal(batch["positions"][0, pos], np.arange(len(pos)))
        text_blocks = batch["text_segments"][0, pos]
        last = ids[(kinds == speech_lm.TEXT) & (text_blocks == text_blocks.max())]
        assert list(last) == tok.encode(by_utt[utt]["text"])
    # the backbone's mask never lets a position see another segment or padding
    seg = jnp.asarray(batch["segment_ids"])
    t = seg.shape[1]
    mask = np.asarray(qwen2.attention_mask_for(t, t, None, None, seg))[:, 0]
    s = batch["segment_ids"]
    same = (s[:, :, None] == s[:, None, :]) & (s[:, None, :] > 0)
    assert not np.any(mask & ~same)
    # and a packed row gives each segment exactly the logits it gets alone (at position 0 of its own row)
    model_cfg = speech_lm.SpeechLMConfig(
        backbone=qwen2.Qwen2Config(
            vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
        ),
        speech_token_size=cfg.speech_token_size,
        layout="gpt_sovits2",
    )
    model = nnx.jit(lambda: speech_lm.SpeechLM(model_cfg, rngs=nnx.Rngs(0)))()
    kinds = batch["kinds"][0]
    ids = np.where(kinds == speech_lm.TEXT, batch["ids"][0] % 512, batch["ids"][0])  # text ids into the tiny vocab
    rows_k, rows_i, rows_s = [kinds], [ids], [s[0]]
    for sid in (1, 2):
        pos = np.flatnonzero(s[0] == sid)
        pad = t - len(pos)
        rows_k.append(np.pad(kinds[pos], (0, pad), constant_values=speech_lm.PAD))
        rows_i.append(np.pad(ids[pos], (0, pad)))
        rows_s.append(np.pad(np.ones(len(pos), np.int32), (0, pad)))
    forward = nnx.jit(lambda m, k, i, sg: m(k, i, segment_ids=sg))
    logits = np.asarray(forward(model, *(jnp.asarray(np.stack(r)) for r in (rows_k, rows_i, rows_s))))
    for j, sid in enumerate((1, 2), start=1):
        pos = np.flatnonzero(s[0] == sid)
        np.testing.assert_allclose(logits[0, pos], logits[j, : len(pos)], atol=1e-5)
    assert not np.allclose(logits[1, : len(pos)][:5], logits[2, :5])  # different examples, different logits
    del jax


def test_global_arrays_on_mesh(corpus):
    import jax

    from sovits2_jax.parallel.mesh import make_mesh

    cfg = config("llm", batch_multiple=8, max_frames_in_batch=640)
    it = pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)
    mesh = make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    local = next(iter(pipeline.make_batches(cfg, data_list=corpus, process_index=0, process_count=1)))
    arrays = next(it.global_batches(mesh))
    assert arrays["speech_token"].shape == local["speech_token"].shape
    assert arrays["speech_token"].sharding.spec[0] == ("data", "fsdp")
    assert len(arrays["speech_token"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(arrays["speech_token"]), local["speech_token"])
    bad = config("llm", batch_multiple=1, max_frames_in_batch=90)
    with pytest.raises(ValueError, match="batch_multiple"):
        next(pipeline.make_batches(bad, data_list=corpus, process_index=0, process_count=1).global_batches(mesh))
    del jax


def test_cli_prints_stats_and_dumps(corpus, tmp_path):
    dump = tmp_path / "b.npz"
    cmd = [
        sys.executable, "-m", "sovits2_jax.data.pipeline", "--config=configs/data.py:llm", f"--data_list={corpus}",
        "--num_batches=3", f"--dump={dump}", "--config.data.worker_count=0", "--config.data.max_frames_in_batch=1000",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "batches: 3" in res.stdout and "padding:" in res.stdout and "distinct shapes:" in res.stdout
    with np.load(dump) as z:
        assert {"00000/speech_token", "00002/text_token_len"} <= set(z.files)
    res = subprocess.run([*cmd, "--config.data.max_frames_in_batch=10"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1 and "config.data.bucket_lengths" in res.stderr


def test_hift_crops_mel_and_f0(rows, tmp_path):
    data_list = synthetic.write_corpus(str(tmp_path / "hift"), rows[:6], rows_per_file=2)
    cfg = config("hift", max_frames_in_batch=51 * 4, drop_remainder=False)
    batches, _ = read_all(cfg, data_list)
    assert sum(int(b["valid"].sum()) for b, _ in batches) == 6
    for batch, _ in batches:
        assert batch["speech"].shape == (4, 24480) and batch["speech_feat"].shape == (4, 51, 80)
        assert batch["pitch_feat"].shape == (4, 51)
        v = batch["valid"]
        assert np.all(np.abs(batch["speech"][v]).max(axis=1) > 0.05)  # a crop of the tone, not padding
        voiced = batch["pitch_feat"][v]
        # synthetic speakers sing at 100 + 25 * s Hz (with 5 % vibrato)
        assert np.all((np.median(voiced, axis=1) > 90) & (np.median(voiced, axis=1) < 200))
    again, _ = read_all(cfg, data_list)
    assert_same(batches, again)  # random crops are a function of (seed, step, row)


def test_online_tokenization_adds_whisper_mel(rows, tmp_path):
    path = tmp_path / "notok"
    path.mkdir()
    table = pq.read_table(synthetic.write_corpus(str(tmp_path / "src"), rows[:8], rows_per_file=8).replace(
        "data.list", "parquet_000000000.tar"))  # fmt: skip
    pq.write_table(table.drop(["speech_token"]), path / "a.parquet")
    (path / "data.list").write_text("a.parquet\n")  # a relative entry
    cfg = config("flow", online_tokenization=True)
    batches, it = read_all(cfg, str(path / "data.list"))
    assert sum(int(b["valid"].sum()) for b, _ in batches) == 8 and not it.skipped
    for batch, _ in batches:
        assert "speech_token" not in batch
        b, length = batch["speech_feat"].shape[:2]
        assert batch["whisper_feat"].shape == (b, 2 * length + 4, 128)
        v = batch["valid"]
        # 100 whisper frames per second against 50 mel frames per second
        np.testing.assert_allclose(batch["whisper_feat_len"][v], 2 * batch["speech_feat_len"][v], atol=2)


def test_fitted_buckets_cover_the_corpus(corpus, rows):
    cfg = config("llm", num_buckets=3, max_frames_in_batch=400)
    batches, it = read_all(cfg, corpus)
    lengths = [b.length for b in it.dataset.buckets]
    tok_lens = [len(r["speech_token"]) for r in rows]
    assert len(lengths) == 3 and lengths[-1] == max(tok_lens)  # text is short: speech tokens set the length
    assert sum(int(b["valid"].sum()) for b, _ in batches) == NUM_ROWS
    for batch, _ in batches:
        b, length = batch["speech_token"].shape
        assert length in lengths and b * length <= 400


def test_llm_dpo_batches_rejected_tokens(rows, tmp_path):
    path = tmp_path / "dpo"
    path.mkdir()
    src = synthetic.write_corpus(str(tmp_path / "src"), rows[:8], rows_per_file=8)
    table = pq.read_table(src.replace("data.list", "parquet_000000000.tar"))
    reject = [np.asarray(r["speech_token"][::-1][: 10 + i], np.int64) for i, r in enumerate(rows[:8])]
    reject[3] = np.zeros(0, np.int64)  # no rejected tokens: skipped at plan time, counted
    table = table.append_column("reject_speech_token", pa.array(reject, type=pa.list_(pa.int64())))
    pq.write_table(table, path / "a.parquet")
    (path / "data.list").write_text(str(path / "a.parquet") + "\n")
    batches, it = read_all(config("llm", dpo=True), str(path / "data.list"))
    assert dict(it.skipped) == {"empty rejected speech tokens": 1}
    by_utt = {r["utt"]: i for i, r in enumerate(rows[:8])}
    n = 0
    for batch, meta in batches:
        assert batch["reject_speech_token"].shape == batch["speech_token"].shape
        for i, utt in enumerate(meta["_utts"]):
            if utt:
                want = reject[by_utt[utt]]
                assert batch["reject_speech_token_len"][i] == len(want)
                np.testing.assert_array_equal(batch["reject_speech_token"][i, : len(want)], want)
                n += 1
    assert n == 7


def test_gpt_sovits2_long_examples_drop_references_then_skip(corpus):
    cfg = config("gpt_sovits2", bucket_lengths=[130], max_frames_in_batch=520, min_prompts=1, max_prompts=3)
    ds = pipeline.build_dataset(cfg, data_list=corpus, process_index=0, process_count=1)
    _, skips = ds._plan(0)
    kept = ds.examples(0)
    assert all(len(ex) == 2 for ex in kept)  # 3 s utterances: only one reference fits in 130 positions
    assert len(kept) + skips.get("longer than the pack length", 0) == NUM_ROWS
    assert skips.get("longer than the pack length", 0) > 0


def test_sample_longer_than_its_bucket_is_skipped_not_fatal(corpus):
    from sovits2_jax.data import batching, steps

    ds = pipeline.build_dataset(config("flow"), data_list=corpus, process_index=0, process_count=1)
    fits = {"speech_feat": np.zeros((100, 80)), "speech_token": np.zeros(50), "embedding": np.zeros(192), "cond_len": 7}
    ds.task.check_fits(fits, batching.Bucket(2, 100))
    with pytest.raises(steps.SkipSample, match="longer than its bucket"):
        ds.task.check_fits({**fits, "speech_token": np.zeros(51)}, batching.Bucket(2, 100))
    batch = ds.task.assemble([fits, None], batching.Bucket(2, 100))
    assert batch["speech_feat_len"].tolist() == [100, 0] and batch["speech_token_len"].tolist() == [50, 0]


@pytest.mark.parametrize("kind", ["flow", "hift"])
def test_global_batches_do_not_depend_on_the_process_count(corpus, kind):
    """With 2 data shards, 1 process reads both and its batch is process 0's rows then process 1's, random
    draws included (flow's prompt lengths, hift's crops are keyed by the row's place in the global batch)."""
    cfg = config(kind, num_shards=2, **({"max_frames_in_batch": 102} if kind == "hift" else {}))
    one, _ = read_all(cfg, corpus, process_index=0, process_count=1)
    halves = [read_all(cfg, corpus, process_index=p, process_count=2)[0] for p in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) > 2
    for (whole, meta), (a, meta_a), (b, meta_b) in zip(one, *halves):
        assert meta["_utts"] == meta_a["_utts"] + meta_b["_utts"]
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([a[key], b[key]]), err_msg=key)
    with pytest.raises(ValueError, match="num_shards=3 is not a multiple of the 2 processes"):
        pipeline.build_dataset(config(kind, num_shards=3), data_list=corpus, process_index=0, process_count=2)
