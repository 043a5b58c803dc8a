"""STFT / iSTFT against torch.stft / torch.istft for every configuration HiFT, its GAN and VITS use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sovits2_jax.audio.stft import hann_window, istft, magnitude, num_frames, stft

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

# (n_fft, hop, win, center): HiFT source/iSTFT, MultiResSpecDiscriminator x3, Matcha mel (GAN mel loss),
# GPT-SoVITS v2 spectrogram (32 kHz, hop 640).
CONFIGS = [
    (16, 4, 16, True),
    (1024, 120, 600, True),
    (2048, 240, 1200, True),
    (512, 50, 240, True),
    (1920, 480, 1920, False),
    (2048, 640, 2048, False),
]


@pytest.mark.parametrize(("n_fft", "hop", "win", "center"), CONFIGS)
def test_stft_matches_torch(n_fft, hop, win, center):
    rng = np.random.default_rng(n_fft + hop)
    x = rng.standard_normal((2, 4801)).astype(np.float32) * 0.3
    window = torch.hann_window(win)
    want = torch.stft(torch.from_numpy(x), n_fft, hop, win, window, center=center, return_complex=True).numpy()
    got = np.asarray(jax.jit(lambda a: stft(a, n_fft, hop, win, center=center))(x))
    assert got.shape == (2, num_frames(4801, n_fft, hop, center=center), n_fft // 2 + 1)
    want = want.transpose(0, 2, 1)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.real, want.real, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(got.imag, want.imag, atol=1e-5 * scale, rtol=0)


def test_hann_window_is_torchs_periodic_window():
    from scipy.signal import get_window

    for n in (16, 600, 1920):
        # HiFT builds its window with scipy in float64 (bit-equal); torch's float32 one is within 2 ulp.
        np.testing.assert_array_equal(hann_window(n), get_window("hann", n, fftbins=True).astype(np.float32))
        np.testing.assert_allclose(hann_window(n), torch.hann_window(n).numpy(), atol=2e-7, rtol=0)
    np.testing.assert_allclose(
        hann_window(9, periodic=False), torch.hann_window(9, periodic=False).numpy(), atol=2e-7, rtol=0
    )


@pytest.mark.parametrize(("n_fft", "hop", "win"), [(16, 4, 16), (1024, 120, 600), (2048, 640, 2048), (12, 5, 10)])
def test_istft_matches_torch_on_arbitrary_spectra(n_fft, hop, win):
    rng = np.random.default_rng(n_fft)
    frames = 37
    spec = rng.standard_normal((2, frames, n_fft // 2 + 1)) + 1j * rng.standard_normal((2, frames, n_fft // 2 + 1))
    spec = spec.astype(np.complex64)
    window = torch.hann_window(win)
    want = torch.istft(torch.from_numpy(spec.transpose(0, 2, 1).copy()), n_fft, hop, win, window).numpy()
    got = np.asarray(jax.jit(lambda s: istft(s, n_fft, hop, win))(spec))
    assert got.shape == want.shape == (2, hop * (frames - 1))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_istft_inverts_stft_with_explicit_length():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    spec = stft(x, 16, 4)
    np.testing.assert_allclose(np.asarray(istft(spec, 16, 4, length=1000)), x, atol=1e-5)
    window = torch.hann_window(16)
    want = torch.istft(torch.from_numpy(np.asarray(spec).transpose(0, 2, 1).copy()), 16, 4, 16, window, length=1010)
    np.testing.assert_allclose(np.asarray(istft(spec, 16, 4, length=1010)), want.numpy(), atol=1e-5)


def test_magnitude_has_finite_gradient_at_silence():
    x = jnp.zeros((1, 400)).at[0, 200:].set(jnp.linspace(-1, 1, 200))
    grad = jax.grad(lambda a: magnitude(stft(a, 64, 16)).sum())(x)
    assert np.isfinite(np.asarray(grad)).all()
    want = torch.stft(torch.from_numpy(np.asarray(x)), 64, 16, 64, torch.hann_window(64), return_complex=True).abs()
    np.testing.assert_allclose(np.asarray(magnitude(stft(x, 64, 16))), want.numpy().transpose(0, 2, 1), atol=1e-5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="win_length"):
        stft(np.zeros((1, 100), np.float32), 16, 4, 32)
    with pytest.raises(ValueError, match="bins"):
        istft(jnp.zeros((1, 5, 8), jnp.complex64), 16, 4)
    with pytest.raises(ValueError, match="NOLA"):
        istft(jnp.zeros((1, 5, 9), jnp.complex64), 16, 20)
