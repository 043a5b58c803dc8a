"""Training-side parity with GPT-SoVITS: the training forward (posterior, flow, sliced generator), the KL / mel
losses, the MPD + scale discriminator with the LSGAN / feature-matching losses, and the transformer coupling
layer (VITS2 / GPT-SoVITS2 flow) with every encoder layer applied."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from sovits2_jax.convert.gpt_sovits_keys import rules_for  # noqa: E402
from sovits2_jax.convert.mapping import expected_shapes, torch_to_ours  # noqa: E402
from sovits2_jax.convert.params import params_from_flat  # noqa: E402
from sovits2_jax.parity.references import vits as parity_vits  # noqa: E402
from sovits2_jax.train import vits_losses as losses  # noqa: E402

pytestmark = pytest.mark.parity
ATOL = 1e-4


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _bct(a):
    return np.asarray(a).transpose(0, 2, 1)


def _close(got, want, atol=ATOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got - want).max()
    assert err <= atol, f"max abs error {err:.3e} > {atol:g} (|ref| max {np.abs(want).max():.3g})"


def _perturb(module, seed):
    return parity_vits.perturb_(module, seed).eval()


def test_training_forward_and_losses(monkeypatch):
    from gpt_sovits.module.losses import kl_loss as torch_kl
    from gpt_sovits.module.mel_processing import mel_spectrogram_torch, spec_to_mel_torch

    cfg, ref, graphdef, params = parity_vits.reference_pair("v2", 0)
    ours = nnx.merge(graphdef, params)
    rng = np.random.default_rng(0)
    b, t = 2, 40
    lengths = np.array([40, 34])
    ssl = rng.standard_normal((b, cfg.ssl_dim, t)).astype(np.float32)  # 50 Hz hubert features
    spec = np.abs(rng.standard_normal((b, cfg.spec_channels, t))).astype(np.float32)
    text = rng.integers(0, cfg.n_symbols, (b, 13))
    text_lengths = np.array([13, 9])
    eps = rng.standard_normal((b, cfg.inter_channels, t)).astype(np.float32)
    uniform = np.array([0.3, 0.8], np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: _t(eps).to(x.dtype))
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: _t(uniform))
    with torch.no_grad():
        o, _, ids, mask, _, (z, z_p, m_p, logs_p, m_q, logs_q), _ = ref(
            _t(ssl), _t(spec), _t(lengths), _t(text), _t(text_lengths)
        )
        codes = ref.extract_latent(_t(ssl)).transpose(0, 1).numpy()  # [n_q, B, T/2]
        kl = torch_kl(z_p, logs_q, m_p, logs_p, mask).item()
        mel = spec_to_mel_torch(_t(spec), cfg.n_fft, cfg.n_mel_channels, cfg.sampling_rate, 0.0, None)
        seg = cfg.segment_size // cfg.hop_length
        y_mel = torch.stack([mel[i, :, s : s + seg] for i, s in enumerate(ids)])
        y_hat_mel = mel_spectrogram_torch(
            o.squeeze(1), cfg.n_fft, cfg.n_mel_channels, cfg.sampling_rate, cfg.hop_length, cfg.win_length, 0.0, None
        )
        mel_l1 = torch.nn.functional.l1_loss(y_mel, y_hat_mel).item() * cfg.c_mel
    out = ours(
        jnp.asarray(codes, jnp.int32),
        jnp.asarray(spec.transpose(0, 2, 1)),
        jnp.asarray(lengths),
        jnp.asarray(text),
        jnp.asarray(text_lengths),
        None,
        posterior_eps=jnp.asarray(eps.transpose(0, 2, 1)),
        slice_starts=jnp.asarray(ids.numpy()),
    )
    np.testing.assert_array_equal(np.asarray(out["ids_slice"]), ids.numpy())
    for name, want in (("m_p", m_p), ("logs_p", logs_p), ("m_q", m_q), ("logs_q", logs_q), ("z", z), ("z_p", z_p)):
        assert np.abs(_bct(out[name]) - want.numpy()).max() <= ATOL, name
    _close(np.asarray(out["y_hat"])[:, None], o.numpy())
    terms = losses.generator_losses(
        cfg,
        out,
        losses.segment_targets(
            cfg, jnp.zeros((b, t * cfg.hop_length)), jnp.asarray(spec.transpose(0, 2, 1)), out["ids_slice"]
        )[1],
    )
    assert abs(float(terms["loss_kl"]) - kl * cfg.c_kl) <= 1e-4 * max(1.0, abs(kl))
    assert abs(float(terms["loss_mel"]) - mel_l1) <= 1e-4 * max(1.0, abs(mel_l1))


def test_mpd_with_scale_discriminator_and_gan_losses():
    from gpt_sovits.module import losses as tl
    from gpt_sovits.module.models import MultiPeriodDiscriminator as TorchMPD

    from sovits2_jax.convert.discriminator_keys import mpd_rules
    from sovits2_jax.models.discriminators import VITS_S_LAYERS, MultiPeriodDiscriminator
    from sovits2_jax.train import gan_losses

    torch.manual_seed(0)
    ref = _perturb(TorchMPD(), 1)
    torch.manual_seed(0)
    assert parity_vits.unperturbed(ref, TorchMPD()) == []
    make = lambda: MultiPeriodDiscriminator(scale_layers=VITS_S_LAYERS, rngs=nnx.Rngs(0))
    flat = torch_to_ours(
        ((k, v.numpy()) for k, v in ref.state_dict().items()), mpd_rules(with_scale=True), expected_shapes(make)
    )
    ours = nnx.merge(*params_from_flat(make, flat))
    rng = np.random.default_rng(2)
    y = (0.3 * rng.standard_normal((2, 4100))).astype(np.float32)
    y_hat = (y + 0.1 * rng.standard_normal(y.shape)).astype(np.float32)
    with torch.no_grad():
        d_rs, d_gs, f_rs, f_gs = ref(_t(y[:, None]), _t(y_hat[:, None]))
    g_rs, g_gs, gf_rs, gf_gs = ours(jnp.asarray(y), jnp.asarray(y_hat))
    assert len(g_rs) == 6  # scale discriminator + 5 periods
    for want, got in zip(d_rs + d_gs, g_rs + g_gs):
        _close(got, want.numpy())
    for wmaps, gmaps in zip(f_rs + f_gs, gf_rs + gf_gs):
        for w, g in zip(wmaps, gmaps):
            _close(np.moveaxis(np.asarray(g), -1, 1), w.numpy())
    assert abs(float(gan_losses.feature_matching_loss(gf_rs, gf_gs)) - tl.feature_loss(f_rs, f_gs).item()) < 1e-4
    assert abs(float(gan_losses.generator_adversarial_loss(g_gs)) - tl.generator_loss(d_gs)[0].item()) < 1e-4
    want_d = tl.discriminator_loss(d_rs, d_gs)[0].item()
    assert abs(float(gan_losses.discriminator_adversarial_loss(g_rs, g_gs)) - want_d) < 1e-4
    disc = losses.discriminator_losses((g_rs, g_gs, gf_rs, gf_gs))
    assert abs(float(disc["loss"]) - want_d) < 1e-4


def test_transformer_coupling_layer_applies_every_layer():
    from gpt_sovits.module.attentions import TransformerCouplingLayer as TorchTCL

    from sovits2_jax.models.vits2.attention import Encoder
    from sovits2_jax.models.vits2.flows import CouplingLayer

    channels, hidden, filt, heads, layers, kernel, gin = 16, 32, 64, 2, 3, 5, 24
    make_ref = lambda: TorchTCL(channels, hidden, kernel, layers, heads, 0.0, filt, mean_only=True, gin_channels=gin)
    torch.manual_seed(0)
    ref = _perturb(make_ref(), 3)
    torch.manual_seed(0)
    fresh = make_ref()
    assert parity_vits.unperturbed(ref, fresh) == []
    assert any(k.endswith(".gamma") for k in fresh.state_dict())
    assert len(ref.enc.attn_layers) == layers

    def make():
        enc = Encoder(hidden, filt, heads, layers, kernel, window_size=4, gin_channels=gin, rngs=nnx.Rngs(0))
        return CouplingLayer(channels, hidden, enc, rngs=nnx.Rngs(1))

    shapes = expected_shapes(make)
    flat = torch_to_ours(((k, v.numpy()) for k, v in ref.state_dict().items()), rules_for(shapes), shapes)
    ours = nnx.merge(*params_from_flat(make, flat))
    assert len(ours.enc.attn_layers) == layers
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, channels, 21)).astype(np.float32)
    g = rng.standard_normal((2, gin, 1)).astype(np.float32)
    mask = (np.arange(21)[None] < np.array([21, 15])[:, None]).astype(np.float32)[:, None]
    with torch.no_grad():
        fwd, _ = ref(_t(x), _t(mask), g=_t(g))
        rev = ref(_t(x), _t(mask), g=_t(g), reverse=True)
    xj, mj, gj = (jnp.asarray(a.transpose(0, 2, 1)) for a in (x, mask, g))
    _close(_bct(ours(xj, mj, gj, False)), fwd.numpy())
    _close(_bct(ours(xj, mj, gj, True)), rev.numpy())
