"""Discriminators (MPD, multi-resolution spectrogram, scale) and GAN losses against the torch references."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert.discriminator_keys import cosyvoice2_discriminator_rules, mpd_rules
from sovits2_jax.convert.mapping import expected_shapes, ours_to_torch, torch_to_ours
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.discriminators import (
    VITS_S_LAYERS,
    MultiPeriodDiscriminator,
    MultipleDiscriminator,
)
from sovits2_jax.train import gan_losses

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity


def _perturb(module, seed):
    """Random biases and weight-norm gains (g != ||v||), so a converter that drops or swaps them fails."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith(("original0", "weight_g")):
                p.mul_(torch.rand(p.shape, generator=gen) + 0.5)
    return module.eval()


def _convert(module, make_model, rules):
    flat = torch_to_ours(
        ((k, v.detach().numpy()) for k, v in module.state_dict().items()), rules, expected_shapes(make_model)
    )
    graphdef, params = params_from_flat(make_model, flat)
    return graphdef, params, flat


def _cosyvoice_discriminator():
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    import_cosyvoice("matcha.hifigan.models")
    if "torchaudio.transforms" not in sys.modules:  # DiscriminatorR's Spectrogram; unused by CosyVoice2
        stub = types.ModuleType("torchaudio.transforms")
        stub.Spectrogram = None
        sys.modules["torchaudio.transforms"] = stub
    from cosyvoice.hifigan.discriminator import MultipleDiscriminator as TorchMultiple
    from cosyvoice.hifigan.discriminator import MultiResSpecDiscriminator
    from matcha.hifigan.models import MultiPeriodDiscriminator as TorchMPD

    torch.manual_seed(0)
    return _perturb(TorchMultiple(TorchMPD(), MultiResSpecDiscriminator()), 1)


def _signals(batch=2, samples=9601, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 24000.0
    y = 0.5 * np.sin(2 * np.pi * 220 * t)[None] + 0.05 * rng.standard_normal((batch, samples))
    y_hat = y + 0.1 * rng.standard_normal((batch, samples))
    return y.astype(np.float32), y_hat.astype(np.float32)


def _fmap_to_torch(f):
    return np.moveaxis(np.asarray(f), -1, 1)  # [B, H, W, C] -> [B, C, H, W]; [B, T, C] -> [B, C, T]


@pytest.fixture(scope="module")
def cosyvoice_pair():
    ref = _cosyvoice_discriminator()
    make = lambda: MultipleDiscriminator(rngs=nnx.Rngs(0))
    graphdef, params, _ = _convert(ref, make, cosyvoice2_discriminator_rules())
    y, y_hat = _signals()
    with torch.no_grad():
        want = ref(torch.from_numpy(y), torch.from_numpy(y_hat))
    got = jax.jit(lambda p, a, b: nnx.merge(graphdef, p)(a, b))(params, y, y_hat)
    return ref, graphdef, params, want, got


def test_cosyvoice2_discriminator_outputs_match(cosyvoice_pair):
    _, _, _, want, got = cosyvoice_pair
    d_rs, d_gs, f_rs, f_gs = want
    assert len(got[0]) == len(d_rs) == 8  # 5 periods + 3 resolutions
    for ours, ref in zip(got[0] + got[1], d_rs + d_gs):
        r = ref.numpy()
        np.testing.assert_allclose(np.asarray(ours), r, atol=1e-4 * max(1.0, np.abs(r).max()), rtol=0)
    for maps_ours, maps_ref in zip(got[2] + got[3], f_rs + f_gs):
        assert len(maps_ours) == len(maps_ref)
        for a, b in zip(maps_ours, maps_ref):
            b = b.numpy()
            assert _fmap_to_torch(a).shape == b.shape
            np.testing.assert_allclose(_fmap_to_torch(a), b, atol=1e-4 * max(1.0, np.abs(b).max()), rtol=0)


def test_gan_losses_match_reference(cosyvoice_pair):
    from cosyvoice.utils.losses import tpr_loss
    from matcha.hifigan.models import discriminator_loss, feature_loss, generator_loss

    _, _, _, want, got = cosyvoice_pair
    d_rs, d_gs, f_rs, f_gs = want
    ours = jax.jit(
        lambda o: {
            "gen": gan_losses.generator_adversarial_loss(o[1]),
            "disc": gan_losses.discriminator_adversarial_loss(o[0], o[1]),
            "fm": gan_losses.feature_matching_loss(o[2], o[3]),
            "tpr_g": gan_losses.tpr_loss(o[1], o[0], 0.04),
            "tpr_d": gan_losses.tpr_loss(o[0], o[1], 0.04),
        }
    )(got)
    ref = {
        "gen": generator_loss(d_gs)[0],
        "disc": discriminator_loss(d_rs, d_gs)[0],
        "fm": feature_loss(f_rs, f_gs),
        "tpr_g": tpr_loss(d_gs, d_rs, 0.04),
        "tpr_d": tpr_loss(d_rs, d_gs, 0.04),
    }
    for name in ref:
        np.testing.assert_allclose(float(ours[name]), float(ref[name]), rtol=1e-4, atol=1e-6, err_msg=name)


def test_tpr_loss_uses_lower_median_and_masked_mean():
    from cosyvoice.utils.losses import tpr_loss

    rng = np.random.default_rng(3)
    dr = [rng.standard_normal((2, 6)).astype(np.float32) * 0.3 for _ in range(3)]  # even count: median matters
    dg = [rng.standard_normal((2, 6)).astype(np.float32) * 0.3 for _ in range(3)]
    for tau in (0.04, 10.0):  # 10: the untruncated mean is compared, not just tau
        want = tpr_loss([torch.from_numpy(a) for a in dr], [torch.from_numpy(a) for a in dg], tau)
        got = gan_losses.tpr_loss([jnp.asarray(a) for a in dr], [jnp.asarray(a) for a in dg], tau)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    same = [jnp.ones((2, 4))]
    assert float(gan_losses.tpr_loss(same, same)) == 0.0


def test_vits_style_mpd_matches_gpt_sovits():
    from sovits2_jax.parity.torch_refs import import_gpt_sovits

    models = import_gpt_sovits()
    torch.manual_seed(0)
    ref = _perturb(models.MultiPeriodDiscriminator(), 2)
    make = lambda: MultiPeriodDiscriminator(scale_layers=VITS_S_LAYERS, rngs=nnx.Rngs(0))
    graphdef, params, flat = _convert(ref, make, mpd_rules(with_scale=True))
    y, y_hat = _signals(batch=1, samples=3203, seed=1)
    with torch.no_grad():
        d_rs, d_gs, f_rs, f_gs = ref(torch.from_numpy(y)[:, None], torch.from_numpy(y_hat)[:, None])
    got = jax.jit(lambda p, a, b: nnx.merge(graphdef, p)(a, b))(params, y, y_hat)
    for ours, r in zip(got[0] + got[1], d_rs + d_gs):
        np.testing.assert_allclose(np.asarray(ours), r.numpy(), atol=1e-4 * max(1.0, r.abs().max().item()))
    for a, b in zip(got[2][0] + got[3][0], f_rs[0] + f_gs[0]):  # the scale discriminator's 1-D maps
        np.testing.assert_allclose(_fmap_to_torch(a), b.numpy(), atol=1e-4 * max(1.0, b.abs().max().item()))
    # Writing back in the legacy key style gives its own state_dict, bit for bit.
    back = dict(ours_to_torch(flat, mpd_rules(with_scale=True, style="legacy")))  # gpt_sovits: weight_g/v
    sd = ref.state_dict()
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


def test_discriminator_rejects_mismatched_inputs():
    from sovits2_jax.models.discriminators import DiscriminatorP

    d = MultiPeriodDiscriminator(periods=(), rngs=nnx.Rngs(0))
    d.discriminators.append(DiscriminatorP(2, channels=(4, 4), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="shapes differ"):
        d(jnp.zeros((1, 100)), jnp.zeros((1, 99)))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        d(jnp.zeros((1, 1, 100)), jnp.zeros((1, 1, 100)))


def test_hift_objectives_match_hifigan(cosyvoice_pair):
    """Whole generator / discriminator objectives (mel L1 with the GAN mel settings, F0 L1, weights 45/2/1)."""
    import functools

    from cosyvoice.hifigan.hifigan import HiFiGan
    from matcha.utils.audio import mel_spectrogram as torch_mel

    from sovits2_jax.audio.mel import MelConfig, mel_spectrogram

    ref_disc, _, _, _, disc_out = cosyvoice_pair  # D(real, generated) of ours on _signals()
    y, y_hat = _signals()
    rng = np.random.default_rng(6)
    f0_target = (150 + 50 * rng.random((2, 20))).astype(np.float32)
    f0_pred = (f0_target + rng.standard_normal((2, 20)) * 5).astype(np.float32)

    class FixedGenerator(torch.nn.Module):
        def forward(self, batch, device):
            return torch.from_numpy(y_hat), torch.from_numpy(f0_pred)

    gan_mel = functools.partial(
        torch_mel, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=None
    )
    ref = HiFiGan(FixedGenerator(), ref_disc, [gan_mel])
    batch = {"speech": torch.from_numpy(y), "pitch_feat": torch.from_numpy(f0_target)}
    with torch.no_grad():
        want_g = ref.forward_generator(batch, "cpu")
        want_d = ref.forward_discriminator(batch, "cpu")

    mel_fns = [functools.partial(mel_spectrogram, cfg=MelConfig(fmax=None))]

    @jax.jit
    def ours(d_out, real, fake, f0p, f0t):
        g = gan_losses.hift_generator_loss(real, fake, f0p, f0t, d_out, mel_fns)
        return g, gan_losses.hift_discriminator_loss(d_out)

    got_g, got_d = ours(disc_out, y, y_hat, f0_pred, f0_target)
    assert float(want_g["loss_mel"]) > 0.01 and float(want_g["loss_f0"]) > 1.0
    for name, value in want_g.items():
        np.testing.assert_allclose(float(got_g[name]), float(value), rtol=1e-4, err_msg=f"generator {name}")
    for name, value in want_d.items():
        np.testing.assert_allclose(float(got_d[name]), float(value), rtol=1e-4, err_msg=f"discriminator {name}")
