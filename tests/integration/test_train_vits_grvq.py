"""The VITS2 decoder on SSL features through the trainable grouped residual VQ (``content="ssl_grvq"``), in process
on the shared tiny corpus extended with SSL features: the ``vits`` family trains with 2 and 4 codebooks (finite
losses, the commitment term in the generator objective, k-means on the first batch and EMA updates after it), the
codebooks are checkpointed beside the params and restored exactly on resume, averaged with them, decoded from codes
to audio of the expected length, and their usage measured."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sovits2_jax.configs import vits2
from sovits2_jax.data import source

SSL_DIM = 32


def write_ssl_lists(tiny_corpus, out) -> list[str]:
    """The tiny corpus with what the SSL stage adds: ``ssl_feature`` (random float16 32-d frames at 50 Hz, twice
    the 25 Hz speech tokens) and ``ssl_feature_dim``; the last train row's features are null (unreadable audio)."""
    rng = np.random.default_rng(0)
    lists = []
    for split, data_list in (("train", tiny_corpus.train_list), ("dev", tiny_corpus.dev_list)):
        paths = source.read_data_list(data_list)
        for i, path in enumerate(paths):
            table = pq.read_table(path)
            frames = [2 * len(t) for t in table.column("speech_token").to_pylist()]
            ssl = [rng.standard_normal(n * SSL_DIM).astype(np.float16) for n in frames]
            if split == "train" and i == len(paths) - 1:
                ssl[-1] = None
            table = table.append_column("ssl_feature", pa.array(ssl, pa.list_(pa.float16())))
            table = table.append_column("ssl_feature_dim", pa.array([SSL_DIM] * len(frames), pa.int32()))
            phones = [rng.integers(0, 64, 4 + n // 25).astype(np.int32) for n in frames]  # a small text vocabulary
            table = table.append_column("phone_ids", pa.array(phones, pa.list_(pa.int32())))
            pq.write_table(table, out / f"{split}{i}.parquet")
        (out / f"{split}.list").write_text("".join(f"{out / f'{split}{i}.parquet'}\n" for i in range(len(paths))))
        lists.append(str(out / f"{split}.list"))
    return lists


@pytest.fixture(scope="module")
def ssl_lists(tiny_corpus, tmp_path_factory):
    return write_ssl_lists(tiny_corpus, tmp_path_factory.mktemp("grvq_lists"))


def overrides(lists, quantizers: int, steps: int) -> list[str]:
    """The grvq tiny preset cut down so that the GAN step compiles quickly (one flow coupling of one layer, a
    1-layer posterior, one resblock kernel, one small period discriminator, 64 text ids from ``phone_ids`` instead
    of the BPE vocabulary; 16 codes, 4 k-means iterations), 4 rows of 40 frames, a checkpoint every step, no eval
    (tests/unit/test_train_buffers.py covers the eval step's buffers)."""
    values = {
        "model.posterior_layers": 1, "model.n_flows": 1, "model.flow_layers": 1, "model.resblock_kernel_sizes": "(3,)",
        "model.resblock_dilation_sizes": "((1,),)", "model.codebook_size": 16, "model.vq_kmeans_iters": 4,
        "model.n_symbols": 64, "data.text_ids_column": "phone_ids", "data.text_vocab_size": 64,
        "discriminator.periods": "(2,)", "discriminator.channels": "(4,8,16,16,16)",
        "data.train_list": lists[0], "data.dev_list": lists[1], "data.worker_count": 0,
        "train.num_steps": steps, "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 1,
        "train.keep_last": 10,
    }  # fmt: skip
    return [f"--config.{k}={v}" for k, v in values.items()]


def restore_items(step_dir) -> tuple[dict, dict]:
    """A trainer step's (params, buffers) items as saved."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(step_dir / "params"), ckptr.restore(step_dir / "buffers")


def assert_trees_equal(a, b) -> None:
    flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
    for (key, x), (_, y) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(key))


@pytest.fixture(scope="module")
def runs(ssl_lists, tmp_path_factory):
    """``runs(quantizers) -> workdir`` of a 3-step trainer run (a subprocess), once per module."""
    import train_helpers as th

    done = {}

    def run(quantizers: int):
        if quantizers not in done:
            workdir = tmp_path_factory.mktemp(f"grvq{2 * quantizers}") / "run"
            proc = th.run(workdir, overrides(ssl_lists, quantizers, 3), config=preset(quantizers))
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[quantizers] = workdir
        return done[quantizers]

    return run


def preset(quantizers: int) -> str:
    return f"configs/vits2.py:grvq{2 * quantizers}_tiny"


@pytest.mark.parametrize("quantizers", [1, 2], ids=["2_codebooks", "4_codebooks"])
def test_trains_and_checkpoints_the_ema_codebooks(runs, quantizers):
    import train_helpers as th

    groups, run = 2, runs(quantizers)
    train = [r for r in th.read_metrics(run) if "train/generator/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:
        for key in ("generator/loss", "generator/loss_commit", "generator/loss_mel", "discriminator/loss"):
            assert np.isfinite(r[f"train/{key}"]), key
        assert r["train/generator/loss_commit"] > 0 and 1 <= r["train/generator/vq_perplexity"] <= 16
        assert r["train/skipped_steps"] == 0
    assert train[-1]["train/data_skipped_rows"] >= 1  # the row with null SSL features
    (p1, b1), (p2, b2) = (restore_items(run / "checkpoints" / str(s)) for s in (1, 2))
    vq1, vq2 = b1["generator"]["grvq"], b2["generator"]["grvq"]
    assert set(b1) == {"generator"} and vq1["embed"].shape == (groups, quantizers, 16, SSL_DIM // groups)
    assert bool(vq1["initted"]) and np.isfinite(vq1["embed"]).all() and np.abs(vq1["embed"]).max() > 0  # k-means ran
    for name in ("embed", "embed_avg", "cluster_size"):  # the generator phase's EMA moves them at every step
        assert not np.array_equal(vq1[name], vq2[name]), name
    # the projection in front of the VQ trains (GPT-SoVITS's frozen hubert_vq projection does not)
    assert not np.array_equal(p1["generator"]["ssl_proj"]["kernel"], p2["generator"]["ssl_proj"]["kernel"])


def test_a_resumed_run_restores_params_and_codebooks_exactly(runs, ssl_lists, tmp_path):
    """Step 3 of a run resumed from step 2 equals the uninterrupted run's step 3, codebooks included."""
    import shutil

    import train_helpers as th

    run = runs(2)
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")
    proc = th.run(resumed, overrides(ssl_lists, 2, 3), config=preset(2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    want_params, want_buffers = restore_items(run / "checkpoints" / "3")
    got_params, got_buffers = restore_items(resumed / "checkpoints" / "3")
    assert_trees_equal(got_buffers, want_buffers)
    assert_trees_equal(got_params, want_params)


def test_the_data_task_checks_the_feature_dimension(ssl_lists):
    from sovits2_jax.data import pipeline

    cfg = vits2.get_config("grvq2_tiny").data
    cfg.update(worker_count=0, num_epochs=1, ssl_dim=16)
    with pytest.raises(ValueError, match=r"ssl_feature_dim is 32, config\.data\.ssl_dim=16"):
        pipeline.build_dataset(cfg, data_list=ssl_lists[0])


def test_averaged_codebooks_convert_to_a_torch_state_dict_and_back(runs, tmp_path):
    """The trainer's steps 2 and 3 averaged (codebooks too), written as the documented torch state dict (the VQ
    loads strictly into vector-quantize-pytorch's GroupedResidualVQ and decodes codes as ours does) and read back
    bit-exact."""
    torch = pytest.importorskip("torch")
    from sovits2_jax.convert import checkpoint as ckpt
    from sovits2_jax.convert import gpt_sovits, parts, vits_grvq
    from sovits2_jax.convert.mapping import ConversionError
    from sovits2_jax.models import grvq
    from sovits2_jax.train import average

    run = runs(2)
    dst, chosen = average.average_checkpoints(run, 2, "latest", tmp_path / "avg")
    assert [d.name for d in chosen] == ["3", "2"]
    steps = [ckpt.load_buffers(run / "checkpoints" / s)["grvq"] for s in ("2", "3")]
    mean = ckpt.load_buffers(dst)["grvq"]
    np.testing.assert_allclose(mean["embed"], (steps[0]["embed"] + steps[1]["embed"]) / 2, rtol=1e-6)
    assert mean["initted"].dtype == bool and bool(mean["initted"])
    params, config = parts.load(dst, "vits")
    assert config.content == "ssl_grvq" and config.num_codebooks == 4

    pt = vits_grvq.jax_to_torch(dst, tmp_path / "model.pt")
    obj = torch.load(pt, weights_only=True)
    sd = obj["state_dict"]
    assert obj["config"]["content"] == "ssl_grvq" and obj["info"].startswith(vits_grvq.LAYOUT)
    assert tuple(sd["ssl_proj.weight"].shape) == (SSL_DIM, SSL_DIM, 2)  # GPT-SoVITS's names for the parameters
    assert tuple(sd["enc_p.ssl_proj.weight"].shape) == (config.hidden_channels, SSL_DIM, 1)
    assert tuple(sd["quantizer.rvqs.1.layers.1._codebook.embed"].shape) == (1, 16, SSL_DIM // 2)
    assert sd["quantizer.rvqs.0.layers.0._codebook.initted"].dtype == torch.bool
    vqp = pytest.importorskip("vector_quantize_pytorch")
    ref = vqp.GroupedResidualVQ(dim=SSL_DIM, groups=2, num_quantizers=2, codebook_size=16, kmeans_init=True,
                                rotation_trick=False)  # fmt: skip
    ref.load_state_dict({k[len("quantizer.") :]: v for k, v in sd.items() if k.startswith("quantizer.")}, strict=True)
    codes = np.random.default_rng(0).integers(0, 16, (2, 3, 5, 2))  # [G, B, N, Q]
    with torch.no_grad():
        want = ref.get_output_from_indices(torch.from_numpy(codes)).numpy()
    got = np.asarray(grvq.decode(grvq.state_from_dict(mean), jnp.asarray(codes)))
    np.testing.assert_allclose(got, want, atol=1e-6)

    back = vits_grvq.torch_to_jax(pt, tmp_path / "back")
    assert_trees_equal(parts.load(back, "vits")[0], params)
    assert_trees_equal(parts.load_buffers(back, "vits"), {"grvq": mean})
    with pytest.raises(ConversionError, match=r"convert\.vits_grvq"):
        gpt_sovits.jax_to_torch(dst, tmp_path / "no.pth")
