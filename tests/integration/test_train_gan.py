"""The two GAN families through ``python -m sovits2_jax.train`` on the shared tiny corpus: HiFT (CosyVoice2's
vocoder) and VITS (GPT-SoVITS2's zero-shot layout; GPT-SoVITS v2's SSL layout on a Parquet extended with SSL
features). Each run: the generator's mel loss falls well below its first value, both players' parameters move
between checkpoints, eval ran, the checkpoints hold both players and a meta.json naming the generator."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import train_helpers as th

STEPS = 10


def _overrides(corpus_train, corpus_dev, **extra) -> list[str]:
    values = {
        "data.train_list": corpus_train,
        "data.dev_list": corpus_dev,
        "data.worker_count": 0,
        "train.num_steps": STEPS,
        "train.log_every": 1,
        "train.eval_every": STEPS,
        "train.eval_batches": 1,
        "train.checkpoint_every": STEPS // 2,
        # a higher lr than the recipes' 2e-4 / 1e-4 so ten steps show learning
        "train.optimizer.lr": 2e-3,
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in values.items()]


def _params(step_dir):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(step_dir / "params")


def _moved(a, b) -> float:
    import jax

    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def _check_run(workdir, proc, part: str, fraction: float) -> list[float]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = th.read_metrics(workdir)
    mel = [r["train/generator/loss_mel"] for r in records if "train/generator/loss_mel" in r]
    assert len(mel) == STEPS and np.isfinite(mel).all()
    assert all(np.isfinite(r["train/discriminator/loss"]) for r in records if "train/discriminator/loss" in r)
    end = float(np.mean(mel[-3:]))
    assert end < fraction * mel[0], f"generator mel loss {mel[0]:.3f} -> {end:.3f} (bound {fraction} x first)"
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [STEPS] and np.isfinite(evals[0]["eval/loss"])
    assert th.complete_steps(workdir) == [STEPS // 2, STEPS]
    half, last = (_params(workdir / "checkpoints" / str(s)) for s in (STEPS // 2, STEPS))
    assert set(last) == {"generator", "discriminator"}
    for player in ("generator", "discriminator"):
        assert _moved(half[player], last[player]) > 0, player
    meta = json.loads((workdir / "checkpoints" / str(STEPS) / "meta" / "meta.json").read_text())
    assert (meta["family"], meta["player"], meta["part"]) == (part, "generator", part)
    return mel


def test_hift_gan_trains(tiny_corpus, tmp_path):
    # a smaller generator / discriminator than hift_tiny and 4800-sample crops keep the compile short
    overrides = _overrides(
        tiny_corpus.train_list, tiny_corpus.dev_list,
        **{"model.base_channels": 16, "model.f0_cond_channels": 8,
           "model.resblock_kernel_sizes": "(3,)", "model.resblock_dilation_sizes": "((1,),)",
           "model.source_resblock_dilation_sizes": "((1,),(1,),(1,))",
           "discriminator.mpd_periods": "(2,3)", "discriminator.mrd_fft_sizes": "(256,)",
           "discriminator.mrd_hop_sizes": "(64,)", "discriminator.mrd_win_lengths": "(128,)",
           "data.truncate_length": 4800, "data.bucket_lengths": "(10,)", "data.max_frames_in_batch": 20},
    )  # fmt: skip
    proc = th.run(tmp_path, overrides, config="configs/cosyvoice2.py:hift_tiny", timeout=1500)
    _check_run(tmp_path, proc, "hift", 0.65)  # measured: 1.50 -> 0.69 (0.46 x)


def test_vits_gan_trains_on_tokens_text_and_same_speaker_references(tiny_corpus, tmp_path):
    overrides = _overrides(tiny_corpus.train_list, tiny_corpus.dev_list, **{"model.posterior_layers": 2})
    proc = th.run(tmp_path, overrides, config="configs/gpt_sovits2.py:vits_tiny", timeout=1500)
    _check_run(tmp_path, proc, "vits", 0.5)  # measured: 178.6 -> about 35 (0.2 x)


@pytest.fixture
def ssl_lists(tiny_corpus, tmp_path):
    """The tiny corpus with GPT-SoVITS v1/v2's columns added: random 8-d SSL features at 50 Hz, phoneme ids."""
    from sovits2_jax.data import source

    rng = np.random.default_rng(0)
    lists = []
    for split, data_list in (("train", tiny_corpus.train_list), ("dev", tiny_corpus.dev_list)):
        paths = []
        for i, path in enumerate(source.read_data_list(data_list)):
            table = pq.read_table(path)
            frames = [2 * len(t) for t in table.column("speech_token").to_pylist()]
            ssl = [rng.standard_normal(n * 8).astype(np.float32) for n in frames]
            phones = [rng.integers(0, 64, 4 + n // 25).astype(np.int32) for n in frames]
            table = table.append_column("ssl_feature", pa.array(ssl, pa.list_(pa.float32())))
            table = table.append_column("phone_ids", pa.array(phones, pa.list_(pa.int32())))
            paths.append(tmp_path / f"{split}{i}.parquet")
            pq.write_table(table, paths[-1])
        (tmp_path / f"{split}.list").write_text("".join(f"{p}\n" for p in paths))
        lists.append(str(tmp_path / f"{split}.list"))
    return lists


def test_vits_gan_trains_gpt_sovits_v2_on_ssl_features(ssl_lists, tmp_path):
    workdir = tmp_path / "run"
    overrides = _overrides(*ssl_lists, **{"model.posterior_layers": 2})
    proc = th.run(workdir, overrides, config="configs/vits2.py:v2_tiny", timeout=1500)
    _check_run(workdir, proc, "vits", 0.5)  # measured: 177.7 -> 39.1 (0.22 x)
    last = _params(workdir / "checkpoints" / str(STEPS))["generator"]
    first = _params(workdir / "checkpoints" / str(STEPS // 2))["generator"]
    # the frozen quantizer and its projection never move (GPT-SoVITS's parameter groups)
    assert _moved(first["quantizer"], last["quantizer"]) == 0 and _moved(first["ssl_proj"], last["ssl_proj"]) == 0


def test_vits_mel_trains_the_generator_alone_and_checkpoints_as_a_vits_decoder(tiny_corpus, tmp_path):
    # the small recipe's decoder warm-up: no discriminator is built, trained or saved; the export metadata is
    # the vits part's, so averaging and GptSoVITS2.from_pretrained read it as a vits decoder
    overrides = _overrides(tiny_corpus.train_list, tiny_corpus.dev_list,
                           **{"model.posterior_layers": 2, "family": "vits_mel"})  # fmt: skip
    proc = th.run(tmp_path, overrides, config="configs/gpt_sovits2.py:vits_tiny", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = th.read_metrics(tmp_path)
    key = next(k for k in records[0] if k.endswith("loss_mel"))
    mel = [r[key] for r in records if key in r]
    assert len(mel) == STEPS and np.isfinite(mel).all()
    assert float(np.mean(mel[-3:])) < 0.7 * mel[0], mel
    assert not any("discriminator" in k for r in records for k in r)
    last = _params(tmp_path / "checkpoints" / str(STEPS))
    assert set(last) == {"generator"}
    assert _moved(_params(tmp_path / "checkpoints" / str(STEPS // 2))["generator"], last["generator"]) > 0
    meta = json.loads((tmp_path / "checkpoints" / str(STEPS) / "meta" / "meta.json").read_text())
    assert (meta["player"], meta["part"]) == ("generator", "vits")
