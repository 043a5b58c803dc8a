"""ConvTranspose1d / Conv2d / weight norm / Snake against torch, for every upsampler HiFT and VITS use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.nn.conv2d import Conv2d
from sovits2_jax.nn.conv_transpose import ConvTranspose1d
from sovits2_jax.nn.layers import Conv1d
from sovits2_jax.nn.snake import Snake
from sovits2_jax.nn.weight_norm import WeightNorm, fold_weight_norm, weight_norm

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

# (kernel, stride) of HiFT (CosyVoice2) and of the GPT-SoVITS v2 generator; padding (k - u) // 2 as both use.
HIFT_UPS = [(16, 8), (11, 5), (7, 3)]
VITS_UPS = [(16, 10), (16, 8), (8, 2), (2, 2)]


def _torch_conv_transpose_to_ours(w: torch.Tensor) -> np.ndarray:
    return w.detach().numpy().transpose(2, 0, 1)  # [I, O/g, K] -> [K, I, O/g]


@pytest.mark.parametrize(("k", "u"), HIFT_UPS + VITS_UPS)
def test_conv_transpose_matches_torch_for_model_upsamplers(k, u):
    torch.manual_seed(k * 100 + u)
    ref = torch.nn.ConvTranspose1d(12, 6, k, u, padding=(k - u) // 2)
    x = torch.randn(2, 12, 23)
    want = ref(x).detach().numpy()
    ours = ConvTranspose1d(12, 6, k, stride=u, padding=(k - u) // 2, rngs=nnx.Rngs(0))
    ours.kernel[...] = jnp.asarray(_torch_conv_transpose_to_ours(ref.weight))
    ours.bias[...] = jnp.asarray(ref.bias.detach().numpy())
    got = np.asarray(ours(jnp.asarray(x.numpy().transpose(0, 2, 1)))).transpose(0, 2, 1)
    assert got.shape == want.shape == (2, 6, 22 * u + k - 2 * ((k - u) // 2))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("k", "s", "p", "op", "d", "g"),
    [(5, 3, 1, 2, 1, 1), (4, 2, 0, 0, 2, 2), (3, 1, 1, 0, 1, 3), (6, 4, 5, 1, 1, 1)],
)
def test_conv_transpose_general_arguments(k, s, p, op, d, g):
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose1d(6, 12, k, s, padding=p, output_padding=op, dilation=d, groups=g, bias=False)
    x = torch.randn(1, 6, 11)
    want = ref(x).detach().numpy()
    ours = ConvTranspose1d(
        6, 12, k, stride=s, padding=p, output_padding=op, dilation=d, groups=g, use_bias=False, rngs=nnx.Rngs(0)
    )
    assert ours.kernel.shape == (k, 6, 12 // g)
    ours.kernel[...] = jnp.asarray(_torch_conv_transpose_to_ours(ref.weight))
    got = np.asarray(ours(jnp.asarray(x.numpy().transpose(0, 2, 1)))).transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_conv2d_matches_torch():
    torch.manual_seed(1)
    ref = torch.nn.Conv2d(4, 8, (3, 9), (1, 2), padding=(1, 4), groups=2)
    x = torch.randn(2, 4, 7, 20)
    ours = Conv2d(4, 8, (3, 9), stride=(1, 2), padding=(1, 4), groups=2, rngs=nnx.Rngs(0))
    ours.kernel[...] = jnp.asarray(ref.weight.detach().numpy().transpose(2, 3, 1, 0))
    ours.bias[...] = jnp.asarray(ref.bias.detach().numpy())
    got = np.asarray(ours(jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref(x).detach().numpy(), atol=1e-5, rtol=0)


def _wn_torch(module, dim=0):
    return torch.nn.utils.parametrizations.weight_norm(module, dim=dim)


@pytest.mark.parametrize("kind", ["conv1d", "conv_transpose1d", "conv2d"])
@pytest.mark.parametrize("dim", [0, 1])
def test_weight_norm_forward_and_grads_match_torch(kind, dim):
    torch.manual_seed(2)
    if kind == "conv1d":
        ref = _wn_torch(torch.nn.Conv1d(6, 10, 5, padding=2), dim)
        ours = Conv1d(6, 10, 5, padding=2, rngs=nnx.Rngs(0))
        to_ours, x = (2, 1, 0), torch.randn(2, 6, 13)
    elif kind == "conv_transpose1d":
        ref = _wn_torch(torch.nn.ConvTranspose1d(6, 10, 11, 5, padding=3), dim)
        ours = ConvTranspose1d(6, 10, 11, stride=5, padding=3, rngs=nnx.Rngs(0))
        to_ours, x = (2, 0, 1), torch.randn(2, 6, 13)
    else:
        ref = _wn_torch(torch.nn.Conv2d(6, 10, (5, 1), (3, 1), padding=(2, 0)), dim)
        ours = Conv2d(6, 10, (5, 1), stride=(3, 1), padding=(2, 0), rngs=nnx.Rngs(0))
        to_ours, x = (2, 3, 1, 0), torch.randn(2, 6, 13, 3)
    with torch.no_grad():  # make g differ from ||v|| so a wrong norm axis shows
        ref.parametrizations.weight.original0.mul_(torch.rand_like(ref.parametrizations.weight.original0) + 0.5)
    g_t = ref.parametrizations.weight.original0
    v_t = ref.parametrizations.weight.original1
    wrapped = WeightNorm(ours, dim=dim)
    wrapped.layer.kernel[...] = jnp.asarray(v_t.detach().numpy().transpose(*to_ours))
    wrapped.layer.bias[...] = jnp.asarray(ref.bias.detach().numpy())
    assert wrapped.g.shape == (g_t.numel(),)
    wrapped.g[...] = jnp.asarray(g_t.detach().numpy().reshape(-1))

    x_ours = jnp.asarray(np.moveaxis(x.numpy(), 1, -1))
    out_t = ref(x)
    (out_t**2).sum().backward()
    got = np.moveaxis(np.asarray(wrapped(x_ours)), -1, 1)
    np.testing.assert_allclose(got, out_t.detach().numpy(), atol=1e-5, rtol=0)

    graphdef, params = nnx.split(wrapped, nnx.Param)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x_ours) ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    np.testing.assert_allclose(np.asarray(grads["g"][...]), g_t.grad.numpy().reshape(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(grads["layer"]["kernel"][...]), v_t.grad.numpy().transpose(*to_ours), rtol=1e-4, atol=1e-4
    )

    fold_weight_norm(wrapped)
    assert wrapped.folded and "g" not in nnx.to_pure_dict(nnx.state(wrapped, nnx.Param))
    np.testing.assert_allclose(np.moveaxis(np.asarray(wrapped(x_ours)), -1, 1), got, atol=1e-6, rtol=0)


def test_weight_norm_starts_as_identity_and_rejects_bad_dim():
    conv = Conv1d(4, 8, 3, rngs=nnx.Rngs(0))
    kernel = np.asarray(conv.kernel[...])
    wrapped = weight_norm(conv)
    np.testing.assert_allclose(np.asarray(wrapped.weight()), kernel, rtol=1e-6)
    with pytest.raises(ValueError, match="dim=3"):
        WeightNorm(Conv1d(4, 8, 3, rngs=nnx.Rngs(0)), dim=3)


def test_snake_matches_reference_formula():
    from cosyvoice.transformer.activation import Snake as TorchSnake

    torch.manual_seed(3)
    ref = TorchSnake(16, alpha_logscale=False)
    with torch.no_grad():
        ref.alpha.copy_(torch.rand(16) * 2 + 0.1)
    x = torch.randn(2, 16, 30) * 3
    ours = Snake(16)
    ours.alpha[...] = jnp.asarray(ref.alpha.detach().numpy())
    got = np.asarray(ours(jnp.asarray(x.numpy().transpose(0, 2, 1)))).transpose(0, 2, 1)
    np.testing.assert_allclose(got, ref(x).detach().numpy(), atol=1e-5, rtol=0)
