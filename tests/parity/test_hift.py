"""HiFT generator against cosyvoice-minicpmo's HiFTGenerator: real size (one shared reference) and tiny size."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert.mapping import expected_shapes
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.hift import HiFTConfig, HiFTGenerator
from sovits2_jax.nn.weight_norm import fold_weight_norm
from sovits2_jax.parity.references import hift as parity_hift

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

ATOL = 1e-4  # whole model, fp32
FRAMES = 48  # about 1 s of audio at 24 kHz


@pytest.fixture(scope="module")
def real():
    """Real-size random reference (perturbed), our converted params, inputs and both sides' outputs."""
    config = parity_hift.reference_config("real")
    ref = parity_hift.build_reference(config, seed=0)
    items = [(k, v.detach().numpy()) for k, v in ref.state_dict().items()]
    graphdef, params = parity_hift.convert(items, config)
    inputs = parity_hift.random_inputs(config, FRAMES, batch=2, seed=0)
    x_t, f0_t = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["f0"])
    with torch.no_grad():
        f0_pred = ref.f0_predictor(x_t).numpy()
        source = parity_hift.torch_source(ref, f0_t)
        wav = ref.decode(x=x_t, s=source).numpy()

    @jax.jit
    def ours(p, mel, f0, s):
        model = nnx.merge(graphdef, p)
        return model.predict_f0(mel), model.make_source(f0), model.decode(mel, s)

    mel = jnp.asarray(inputs["x"].transpose(0, 2, 1))
    got = ours(params, mel, jnp.asarray(inputs["f0"]), jnp.asarray(source.numpy()[:, 0]))
    want = {"f0": f0_pred, "source": source.numpy()[:, 0], "wav": wav}
    return dict(
        config=config,
        graphdef=graphdef,
        params=params,
        mel=mel,
        inputs=inputs,
        want=want,
        got=dict(zip(("f0", "source", "wav"), (np.asarray(g) for g in got))),
    )


def test_decode_waveform_matches_at_real_size(real):
    want, got = real["want"]["wav"], real["got"]["wav"]
    assert got.shape == want.shape == (2, FRAMES * 480)
    assert np.abs(want).max() > 1e-2  # a real signal, not a clipped or silent one
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_f0_predictor_matches_at_real_size(real):
    want, got = real["want"]["f0"], real["got"]["f0"]
    assert got.shape == want.shape == (2, FRAMES)
    assert want.std() > 3.0  # the contour varies, so the conv stack is really compared
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


def test_source_module_matches_with_noise_off(real):
    want, got = real["want"]["source"], real["got"]["source"]
    assert got.shape == want.shape == (2, FRAMES * 480)
    voiced = np.repeat(real["inputs"]["f0"] > 10.0, 480, axis=1)
    assert np.abs(want[voiced]).max() > 1e-2 and np.abs(want[~voiced] - want[~voiced][0]).max() == 0.0
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


SMALL = HiFTConfig(
    base_channels=16,
    f0_cond_channels=8,
    resblock_kernel_sizes=(3,),
    resblock_dilation_sizes=((1,),),
    source_resblock_dilation_sizes=((1,), (1,), (1,)),
)


def _small_model(seed: int = 0) -> HiFTGenerator:
    """SMALL with random params, built abstractly (eager per-parameter init compiles one program per shape)."""
    make = lambda: HiFTGenerator(SMALL, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(seed)
    flat = {k: (rng.standard_normal(shape) * 0.2).astype(np.float32) for k, shape in expected_shapes(make).items()}
    flat = {k: np.abs(v) + 0.5 if k.endswith((".g", ".alpha")) else v for k, v in flat.items()}
    return nnx.merge(*params_from_flat(make, flat))


def test_random_source_and_folded_weight_norm():
    model = _small_model()
    mel = jnp.asarray(np.random.default_rng(0).standard_normal((1, 16, 80)), jnp.float32)
    graphdef, params = nnx.split(model)
    infer = jax.jit(lambda p, r, c: nnx.merge(graphdef, p).inference(mel, r, c))

    wav_a, src_a = infer(params, jax.random.key(1), None)
    _, src_b = infer(params, jax.random.key(2), None)
    assert wav_a.shape == (1, 16 * 480) and np.isfinite(np.asarray(wav_a)).all()
    assert np.abs(np.asarray(src_a - src_b)).max() > 1e-3  # the noise follows the key

    decode = lambda m, s: jax.jit(lambda p: nnx.merge(nnx.graphdef(m), p).decode(mel, s))(nnx.state(m))
    wav_ref = decode(model, src_a)
    np.testing.assert_allclose(np.asarray(wav_ref), np.asarray(wav_a), atol=1e-6)
    fold_weight_norm(model)
    assert "g" not in nnx.to_pure_dict(nnx.state(model, nnx.Param))["conv_pre"]
    np.testing.assert_allclose(np.asarray(decode(model, src_a)), np.asarray(wav_ref), atol=1e-5)


def test_training_forward_is_differentiable_and_config_checks():
    model = _small_model(1)
    graphdef, params = nnx.split(model, nnx.Param)
    mel = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 80)), jnp.float32)

    def loss(p):
        wav, f0 = nnx.merge(graphdef, p)(mel, jax.random.key(0))
        return jnp.mean(jnp.abs(wav)) + jnp.mean(f0)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["conv_pre"]["g"][...]).sum()) > 0
    assert float(jnp.abs(grads["f0_predictor"]["classifier"]["kernel"][...]).sum()) > 0
    with pytest.raises(ValueError, match="upsample_kernel_sizes"):
        HiFTConfig(upsample_kernel_sizes=(16, 11))
    with pytest.raises(ValueError, match="channels last"):
        model.decode(jnp.zeros((1, 80, 8)), jnp.zeros((1, 8 * 480)))
    with pytest.raises(ValueError, match="source must be"):
        model.decode(mel, jnp.zeros((1, 100)))
    assert HiFTConfig.from_dict(dataclasses.asdict(SMALL)) == SMALL
