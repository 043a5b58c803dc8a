"""Parity of our SynthesizerTrn (GPT-SoVITS s2) with gpt-sovits-infer's at the released sizes (random init,
every parameter perturbed), piece by piece and end to end. fp32 on CPU; whole-model tolerance 1e-4."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from sovits2_jax.configs.vits2 import gpt_sovits_v1, gpt_sovits_v2  # noqa: E402
from sovits2_jax.parity.references import vits as parity_vits  # noqa: E402

pytestmark = pytest.mark.parity
ATOL = 1e-4


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _bct(a):
    """ours [B, T, C] -> torch [B, C, T] as numpy."""
    return np.asarray(a).transpose(0, 2, 1)


def _mask(lengths, t):
    return (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def _close(got, want, atol=ATOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want).max()
    assert err <= atol, f"max abs error {err:.3e} > {atol:g} (|ref| max {np.abs(want).max():.3g})"


@pytest.fixture(scope="module")
def v2():
    cfg, ref, graphdef, params = parity_vits.reference_pair("v2", 0)
    assert cfg == gpt_sovits_v2()
    return cfg, ref, nnx.merge(graphdef, params)


def test_every_reference_tensor_is_perturbed(v2):
    """Every parameter and buffer differs from its fresh-init value, LayerNorm gammas and the codebook included."""
    cfg, ref, _ = v2
    fresh = parity_vits.make_torch_reference(cfg, 0, perturb=False)
    keys = list(fresh.state_dict())
    assert [k for k in keys if k.endswith(".gamma")] and [k for k in keys if "_codebook.embed" in k]
    # the codebook's ``inited`` is a flag, not a weight: 1 in both, as in released files
    assert parity_vits.unperturbed(ref, fresh) == [k for k in keys if k.endswith("._codebook.inited")]


def test_reference_encoder_with_padding(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(0)
    spec = np.abs(rng.standard_normal((2, cfg.spec_channels, 40))).astype(np.float32)
    lengths = np.array([40, 27])
    mask = _mask(lengths, 40)[:, None]
    with torch.no_grad():
        want = ref.ref_enc(_t(spec * mask), _t(mask)).numpy()  # [B, gin, 1]
    got = ours.style(jnp.asarray(spec.transpose(0, 2, 1)), jnp.asarray(lengths))
    _close(_bct(got), want)


def test_text_encoder_mrte_with_padding(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(1)
    t, s = 30, 11
    content = rng.standard_normal((2, cfg.ssl_dim, t)).astype(np.float32)
    text = rng.integers(0, cfg.n_symbols, (2, s))
    ge = rng.standard_normal((2, cfg.gin_channels, 1)).astype(np.float32)
    y_len, t_len = np.array([30, 21]), np.array([11, 6])
    with torch.no_grad():
        _, m, logs, _ = ref.enc_p(
            _t(content), torch.from_numpy(y_len), torch.from_numpy(text), torch.from_numpy(t_len), _t(ge)
        )
    cm, tm = _mask(y_len, t)[..., None], _mask(t_len, s)[..., None]
    _, gm, glogs, _ = ours.enc_p(
        jnp.asarray(content.transpose(0, 2, 1)), cm, jnp.asarray(text), tm, jnp.asarray(ge.transpose(0, 2, 1))
    )
    _close(_bct(gm), m.numpy())
    _close(_bct(glogs), logs.numpy())


def test_flow_forward_and_reverse(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, cfg.inter_channels, 25)).astype(np.float32)
    ge = rng.standard_normal((2, cfg.gin_channels, 1)).astype(np.float32)
    mask = _mask([25, 18], 25)[:, None]
    with torch.no_grad():
        fwd = ref.flow(_t(z), _t(mask), g=_t(ge)).numpy()
        rev = ref.flow(_t(z), _t(mask), g=_t(ge), reverse=True).numpy()
    zj, mj, gj = (jnp.asarray(a.transpose(0, 2, 1)) for a in (z, mask, ge))
    got_f = ours.flow(zj, mj, gj)
    got_r = ours.flow(zj, mj, gj, reverse=True)
    _close(_bct(got_f), fwd)
    _close(_bct(got_r), rev)
    # the flow is invertible on the valid frames
    back = ours.flow(got_f, mj, gj, reverse=True)
    _close(np.asarray(back) * np.asarray(mj), np.asarray(zj) * np.asarray(mj))


def test_posterior_encoder_statistics(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(3)
    spec = np.abs(rng.standard_normal((2, cfg.spec_channels, 20))).astype(np.float32)
    ge = rng.standard_normal((2, cfg.gin_channels, 1)).astype(np.float32)
    lengths = np.array([20, 13])
    with torch.no_grad():
        _, m, logs, _ = ref.enc_q(_t(spec), torch.from_numpy(lengths), g=_t(ge))
    mask = _mask(lengths, 20)[..., None]
    _, gm, glogs = ours.enc_q(jnp.asarray(spec.transpose(0, 2, 1)), mask, jnp.asarray(ge.transpose(0, 2, 1)), None)
    _close(_bct(gm), m.numpy())
    _close(_bct(glogs), logs.numpy())


def test_generator(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(4)
    z = rng.standard_normal((1, cfg.inter_channels, 8)).astype(np.float32)
    ge = rng.standard_normal((1, cfg.gin_channels, 1)).astype(np.float32)
    with torch.no_grad():
        want = ref.dec(_t(z), g=_t(ge)).numpy()
    got = ours.dec(jnp.asarray(z.transpose(0, 2, 1)), jnp.asarray(ge.transpose(0, 2, 1)))
    assert got.shape == (1, 8 * cfg.hop_length, 1)
    _close(_bct(got), want)


def test_decode_with_fixed_noise(v2, monkeypatch):
    cfg, ref, _ = v2
    _, _, graphdef, params = parity_vits.reference_pair("v2", 0)
    shapes = parity_vits.DEFAULT_SHAPES
    inputs = parity_vits.make_inputs(cfg, **shapes, seed=5)
    frames = 2 * shapes["code_frames"]
    noise = np.random.default_rng(6).standard_normal((1, cfg.inter_channels, frames)).astype(np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: _t(noise).to(x.dtype))
    with torch.no_grad():
        want = ref.decode(_t(inputs["codes"]), _t(inputs["text"]), _t(inputs["refer"]), noise_scale=0.667).numpy()
    args = (
        jnp.asarray(inputs["codes"], jnp.int32),
        jnp.asarray(inputs["text"], jnp.int32),
        jnp.asarray(inputs["refer"].transpose(0, 2, 1)),
        jnp.asarray(0.667),
    )
    got = parity_vits.jit_decode(graphdef, params, *args, jnp.asarray(noise.transpose(0, 2, 1)))
    assert got.shape == (1, frames * cfg.hop_length)
    _close(np.asarray(got)[:, None], want)
    # noise matters: a different draw changes the waveform well beyond the tolerance
    other_noise = np.random.default_rng(7).standard_normal(noise.shape).astype(np.float32)
    other = parity_vits.jit_decode(graphdef, params, *args, jnp.asarray(other_noise.transpose(0, 2, 1)))
    assert np.abs(np.asarray(other) - np.asarray(got)).max() > 10 * ATOL


def test_multi_reference_fusion_is_the_mean_of_ge(v2):
    cfg, ref, ours = v2
    rng = np.random.default_rng(7)
    refs = [np.abs(rng.standard_normal((1, cfg.spec_channels, n))).astype(np.float32) for n in (31, 40)]
    with torch.no_grad():
        ones = [torch.ones(1, 1, r.shape[-1]) for r in refs]
        want = torch.stack([ref.ref_enc(_t(r), m) for r, m in zip(refs, ones)]).mean(0).numpy()
    ours_refs = [jnp.asarray(r.transpose(0, 2, 1)) for r in refs]
    ge = ours.fused_style(ours_refs)
    _close(_bct(ge), want)
    # decode with a list of references conditions the prior on the fused vector (same shapes as the text test)
    content = jnp.asarray(rng.standard_normal((2, 30, cfg.ssl_dim)), jnp.float32)
    text = jnp.asarray(rng.integers(0, cfg.n_symbols, (2, 11)))
    two = jnp.concatenate([ge, ours.style(ours_refs[0])])
    _, m, _, _ = ours.enc_p(content, jnp.ones((2, 30, 1)), text, jnp.ones((2, 11, 1)), two)
    assert np.abs(np.asarray(m[0]) - np.asarray(m[1])).max() > 10 * ATOL


def test_v1_layout_reference_and_text_encoders():
    """v1: 322 symbols and a reference encoder over all 1025 bins (v2 reads only the first 704)."""
    cfg, ref, graphdef, params = parity_vits.reference_pair("v1", 0)
    assert cfg == gpt_sovits_v1() and ref.enc_p.text_embedding.num_embeddings == 322
    ours = nnx.merge(graphdef, params)
    rng = np.random.default_rng(12)
    spec = np.abs(rng.standard_normal((1, cfg.spec_channels, 31))).astype(np.float32)
    content = rng.standard_normal((2, cfg.ssl_dim, 30)).astype(np.float32)
    text = rng.integers(0, 322, (2, 11))
    with torch.no_grad():
        ge = ref.ref_enc(_t(spec), torch.ones(1, 1, 31))
        lens = torch.LongTensor([30, 30])
        _, m, _, _ = ref.enc_p(
            _t(content), lens, torch.from_numpy(text), torch.LongTensor([11, 11]), ge.repeat(2, 1, 1)
        )
    got_ge = ours.style(jnp.asarray(spec.transpose(0, 2, 1)))
    _close(_bct(got_ge), ge.numpy())
    _, got_m, _, _ = ours.enc_p(
        jnp.asarray(content.transpose(0, 2, 1)),
        jnp.ones((2, 30, 1)),
        jnp.asarray(text),
        jnp.ones((2, 11, 1)),
        jnp.concatenate([got_ge, got_ge]),
    )
    _close(_bct(got_m), m.numpy())
    # the high bins (> 704) change a v1 style vector
    spec2 = spec.copy()
    spec2[:, 800:] += 1.0
    assert np.abs(np.asarray(ours.style(jnp.asarray(spec2.transpose(0, 2, 1))) - got_ge)).max() > 10 * ATOL


def test_parity_component_vits_passes():
    from sovits2_jax.parity.compare import compare_outputs

    case = parity_vits.build(None, component="vits", seed=0)
    report = compare_outputs(case.run_torch(case.inputs), case.run_jax(case.inputs), case.atol, case.rtol)
    assert report["wav"]["ok"], report
    assert report["wav"]["ref_max_abs"] > 1e-3  # a silent output would pass trivially


@pytest.mark.parametrize("speed", [1.3, 0.7])
def test_speed_resampling_matches_torch_interpolate(v2, speed):
    """GPT-SoVITS v2's decode(speed): linear resampling of the prior frames to int(T / speed) + 1, nearest mask."""
    from sovits2_jax.models.vits2.quantizer import interpolate_linear, interpolate_nearest

    _, _, ours = v2
    x = np.random.default_rng(8).standard_normal((2, 7, 37)).astype(np.float32)  # torch [B, C, T]
    size = int(37 / speed) + 1
    want = torch.nn.functional.interpolate(_t(x), size=size, mode="linear").numpy()
    _close(_bct(interpolate_linear(jnp.asarray(x.transpose(0, 2, 1)), size)), want, atol=1e-5)
    mask = (np.arange(37) < 30).astype(np.float32)[None, None].repeat(2, 0)
    want_m = torch.nn.functional.interpolate(_t(mask), size=size, mode="nearest").numpy()
    np.testing.assert_array_equal(_bct(interpolate_nearest(jnp.asarray(mask.transpose(0, 2, 1)), size)), want_m)
    m, _, mask_p = ours.prior(jnp.zeros((1, 1, 10), jnp.int32), jnp.ones((1, 9), jnp.int32), None, speed=speed)
    assert m.shape[1] == mask_p.shape[1] == int(20 / speed) + 1
