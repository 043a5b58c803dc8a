"""The ``ssl_grvq`` content of the VITS decoder: its settings, the codes layout [groups * quantizers, B, T], decoding
from codes (the codebooks' entries, the same content the quantiser produced, audio of the expected length), the
per-codebook usage figures, and the config checks of the family and the data task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.configs import vits2
from sovits2_jax.models import grvq
from sovits2_jax.models.vits2.config import VitsConfig
from sovits2_jax.models.vits2.synthesizer import SynthesizerTrn
from sovits2_jax.validation import ConfigError


def test_settings_are_checked_and_make_the_vq_config():
    cfg = vits2.model_config("grvq4")
    vq = cfg.grvq_config()
    assert (cfg.num_codebooks, vq.groups, vq.num_quantizers, vq.dim, vq.codebook_size) == (4, 2, 2, 768, 1024)
    assert (vq.decay, vq.kmeans_init, vq.threshold_ema_dead_code, vq.commitment_weight) == (0.99, True, 2.0, 1.0)
    assert vits2.model_config("grvq2").num_codebooks == 2 and vits2.model_config("v2").num_codebooks == 1
    with pytest.raises(ValueError, match="vq_groups: must divide ssl_dim=30"):
        cfg.replace(ssl_dim=30, vq_groups=4)
    with pytest.raises(ValueError, match="vq_decay"):
        cfg.replace(vq_decay=1.0)
    assert VitsConfig.from_dict(cfg.to_dict()) == cfg


def test_codes_rows_layout_round_trips():
    config = grvq.four_codebooks(dim=8, codebook_size=5)
    codes = jnp.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)  # [G, B, N, Q]
    rows = grvq.codes_to_rows(codes)
    assert rows.shape == (4, 3, 4)
    np.testing.assert_array_equal(rows[1], codes[0, :, :, 1])  # row g * Q + q
    np.testing.assert_array_equal(rows[2], codes[1, :, :, 0])
    np.testing.assert_array_equal(grvq.rows_to_codes(rows, config), codes)
    np.testing.assert_array_equal(grvq.rows_to_codes(rows.reshape(2, 2, 3, 4)[:, :1].reshape(2, 3, 4), config),
                                  codes[..., :1])  # the first stage only  # fmt: skip
    with pytest.raises(ValueError, match="expected groups"):
        grvq.rows_to_codes(rows[:3], config)


def test_code_usage_and_perplexity():
    c = 8
    rows = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [3, 3, 3, 3, 3, 3, 3, 3], [0, 0, 1, 1, -1, -1, -1, -1]])
    counts = grvq.code_counts(rows, c)
    assert counts.tolist()[2] == [2, 2, 0, 0, 0, 0, 0, 0]  # -1 (padding) left out
    usage = grvq.code_usage(counts)
    assert usage[0] == {"used": 8.0, "usage": 1.0, "perplexity": pytest.approx(8.0)}
    assert usage[1] == {"used": 1.0, "usage": 0.125, "perplexity": pytest.approx(1.0)}
    assert usage[2]["perplexity"] == pytest.approx(2.0) and usage[2]["usage"] == 0.25
    codes = jnp.asarray(rows.reshape(3, 1, 8, 1))  # [G=3, B, N, Q=1]
    np.testing.assert_allclose(np.asarray(grvq.perplexity(codes, c))[:, 0], [8.0, 1.0, 2.0], rtol=1e-6)
    assert grvq.code_usage(np.zeros((1, c)))[0]["perplexity"] == 1.0


def test_decode_from_codes_gives_the_quantised_content_and_audio_of_the_expected_length():
    small = dict(
        posterior_layers=1, n_flows=1, flow_layers=1, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),)
    )
    cfg = vits2.model_config("grvq4_tiny").replace(n_symbols=64, **small)
    graphdef, params = nnx.split(SynthesizerTrn(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    frames, lengths = 40, jnp.array([40, 26])  # 50 Hz SSL frames; codes at 25 Hz
    ssl = jnp.asarray(rng.standard_normal((2, frames, cfg.ssl_dim)), jnp.float32)
    text = jnp.asarray(rng.integers(0, 64, (2, 7)), jnp.int32)
    refer = jnp.asarray(np.abs(rng.standard_normal((2, 30, cfg.spec_channels))), jnp.float32)

    @jax.jit
    def run(params, state):
        model = nnx.merge(graphdef, params)
        first = model.quantize(ssl, state, jax.random.key(0), ssl_lengths=lengths, training=True)  # k-means + EMA
        state = grvq.state_to_dict(first.state)
        out = model.quantize(ssl, state, ssl_lengths=lengths)  # eval: the codebooks as they are now
        rows = model.extract_codes(ssl, state, ssl_lengths=lengths)
        content = model.content(rows, state)
        wav = model.decode(rows, text, refer, 0.0, code_lengths=lengths // 2, vq_state=state)
        return state, out, rows, content, wav

    _, out, rows, content, wav = run(params, grvq.state_to_dict(grvq.init_state(cfg.grvq_config())))
    assert rows.shape == (4, 2, frames // 2) and rows.dtype == jnp.int32
    np.testing.assert_array_equal(rows, grvq.codes_to_rows(out.codes))
    assert np.all(np.asarray(rows)[:, 1, 13:] == -1) and np.all(np.asarray(rows)[:, 1, :13] >= 0)  # padding
    # codes -> content is the quantiser's output, repeated to the 50 Hz frame rate
    np.testing.assert_allclose(content, jnp.repeat(out.quantized, 2, axis=1), atol=1e-5)
    assert np.all(np.asarray(content)[1, 26:] == 0)
    assert wav.shape == (2, frames * cfg.hop_length) and np.isfinite(np.asarray(wav)).all()
    with pytest.raises(ValueError, match="needs the VQ codebooks"):
        nnx.merge(graphdef, params).content(rows, None)


def test_family_and_data_checks_name_the_key(tiny_corpus):
    from sovits2_jax.data import pipeline
    from sovits2_jax.train import family

    vits = family.get("vits")
    config = vits2.get_config("grvq2_tiny")
    assert config.data.ssl_column == "ssl_feature" and config.data.reference == "speaker"
    assert vits2.get_config("tiny").data.ssl_column == ""  # S3 tokens never read an SSL column
    config.data.ssl_column = ""
    with pytest.raises(ConfigError, match=r"set config\.data\.ssl_column"):
        vits.players(config)
    config = vits2.get_config("grvq2_tiny")
    config.data.ssl_dim = 16
    with pytest.raises(ConfigError, match=r"config\.data\.ssl_dim=16 must equal config\.model\.ssl_dim=32"):
        vits.players(config)
    config = vits2.get_config("tiny")
    config.data.ssl_column = "ssl_feature"
    with pytest.raises(ConfigError, match="reads speech tokens"):
        vits.players(config)
    # the data task: an SSL column the Parquet lacks (tests/integration/test_vits_grvq.py: a wrong <column>_dim)
    cfg = vits2.get_config("grvq2_tiny").data
    cfg.update(worker_count=0, num_epochs=1)
    with pytest.raises(ValueError, match="ssl_column='ssl_feature' is not a column"):
        pipeline.build_dataset(cfg, data_list=tiny_corpus.train_list)
