"""Grouped residual VQ against vector-quantize-pytorch's GroupedResidualVQ (EMA codebooks, straight-through, no
rotation trick) with the codebooks copied across: codes, quantized output, commitment loss, input gradients, the EMA
buffers after a training step, k-means initialisation and dead-code replacement (the reference's random draws
replaced by ours, so both sides pick the same rows)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sovits2_jax.models import grvq

pytestmark = pytest.mark.parity

ATOL = 1e-5


@pytest.fixture(scope="module")
def vqp(torch_available):
    return pytest.importorskip(
        "vector_quantize_pytorch", reason="vector-quantize-pytorch is not installed (add it to the parity extra)"
    )


def reference(vqp, config: grvq.GRVQConfig):
    return vqp.GroupedResidualVQ(
        dim=config.dim,
        groups=config.groups,
        num_quantizers=config.num_quantizers,
        codebook_size=config.codebook_size,
        decay=config.decay,
        eps=config.eps,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        threshold_ema_dead_code=config.threshold_ema_dead_code,
        commitment_weight=config.commitment_weight,
        rotation_trick=False,  # plain straight-through gradients
    )


def codebooks(ref):
    for g, rvq in enumerate(ref.rvqs):
        for q, vq in enumerate(rvq.layers):
            yield g, q, vq._codebook


def copy_state(state: grvq.GRVQState, ref) -> None:
    import torch

    with torch.no_grad():
        for g, q, cb in codebooks(ref):
            cb.embed.copy_(torch.tensor(np.asarray(state.embed[g, q]))[None])
            cb.embed_avg.copy_(torch.tensor(np.asarray(state.embed_avg[g, q]))[None])
            cb.cluster_size.copy_(torch.tensor(np.asarray(state.cluster_size[g, q]))[None])
            cb.initted.fill_(bool(state.initted))


def assert_state_matches(state: grvq.GRVQState, ref, atol=ATOL) -> float:
    worst = 0.0
    for g, q, cb in codebooks(ref):
        for name in ("embed", "embed_avg", "cluster_size"):
            ours = np.asarray(getattr(state, name)[g, q])
            theirs = getattr(cb, name)[0].detach().numpy()
            diff = float(np.abs(ours - theirs).max())
            assert diff <= atol * max(1.0, float(np.abs(theirs).max())), (g, q, name, diff)
            worst = max(worst, diff)
        assert bool(cb.initted) and bool(state.initted)
    return worst


def random_state(config: grvq.GRVQConfig, seed: int) -> grvq.GRVQState:
    """Random codebooks with uneven cluster sizes (so the EMA and the smoothing both matter)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    state = grvq.init_state(dataclasses.replace(config, kmeans_init=False), k1)
    size = jax.random.uniform(k2, state.cluster_size.shape, minval=2.5, maxval=6.0)
    return dataclasses.replace(state, cluster_size=size, embed_avg=state.embed * size[..., None])


def inputs(config, batch=2, frames=24, seed=0, masked=True):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(batch, frames, config.dim)) * 0.3).astype(np.float32)
    mask = np.ones((batch, frames), bool)
    if masked:
        mask[1, frames - 7 :] = False
    return x, mask


def valid_rank(mask: np.ndarray) -> np.ndarray:
    """Flat row index -> its position among the valid rows (the reference drops padded rows before sampling)."""
    flat = mask.reshape(-1)
    return np.cumsum(flat) - 1


CASES = {
    "2x1-masked": (dict(groups=2, num_quantizers=1), True),
    "2x2-masked": (dict(groups=2, num_quantizers=2), True),
    "1x3-decay0.3": (dict(groups=1, num_quantizers=3, decay=0.3), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_step_matches_reference(name, vqp):
    import torch

    overrides, masked = CASES[name]
    base = dict(dim=8, codebook_size=16, decay=0.8, kmeans_init=False, threshold_ema_dead_code=0.0)
    config = grvq.GRVQConfig(**{**base, **overrides})
    state = random_state(config, seed=1)
    ref = reference(vqp, config)
    copy_state(state, ref)
    x, mask = inputs(config, masked=masked)
    w = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)

    ref.train()
    xt = torch.tensor(x, requires_grad=True)
    q_ref, codes_ref, loss_ref = ref(xt, mask=torch.tensor(mask) if masked else None)
    ((q_ref * torch.tensor(w)).sum() + loss_ref.sum()).backward()

    def objective(x):
        out = grvq.quantize(state, x, jax.random.key(0), config=config, mask=mask if masked else None, training=True)
        return (out.quantized * w).sum() + out.commit_loss.sum(), out

    (_, out), grad = jax.jit(jax.value_and_grad(objective, has_aux=True))(jnp.asarray(x))
    assert out.codes.shape == codes_ref.shape == (config.groups, 2, 24, config.num_quantizers)
    np.testing.assert_array_equal(np.asarray(out.codes), codes_ref.numpy())
    assert (np.asarray(out.codes)[:, ~mask] == -1).all() and (np.asarray(out.codes)[:, mask] >= 0).all()
    q_diff = float(np.abs(np.asarray(out.quantized) - q_ref.detach().numpy()).max())
    loss_diff = float(np.abs(np.asarray(out.commit_loss) - loss_ref.detach().numpy()).max())
    grad_diff = float(np.abs(np.asarray(grad) - xt.grad.numpy()).max())
    ema_diff = assert_state_matches(out.state, ref)
    print(f"{name}: quantized {q_diff:.2e} loss {loss_diff:.2e} grad {grad_diff:.2e} ema {ema_diff:.2e}")
    assert q_diff <= ATOL and loss_diff <= ATOL and grad_diff <= ATOL
    assert float(np.abs(np.asarray(out.commit_loss)).min()) > 1e-3  # the compared losses are not vanishing
    # the EMA moved the codebooks (a no-op update would also "match" an untrained reference)
    assert float(np.abs(np.asarray(out.state.embed - state.embed)).max()) > 1e-3

    # eval: same codes and output from the updated codebooks, no state change
    ref.eval()
    with torch.no_grad():
        q_eval, codes_eval, _ = ref(torch.tensor(x), mask=torch.tensor(mask) if masked else None)
    ev = jax.jit(lambda s, x: grvq.quantize(s, x, config=config, mask=mask if masked else None))(out.state, x)
    np.testing.assert_array_equal(np.asarray(ev.codes), codes_eval.numpy())
    np.testing.assert_allclose(np.asarray(ev.quantized), q_eval.numpy(), atol=ATOL)
    np.testing.assert_array_equal(np.asarray(ev.state.embed), np.asarray(out.state.embed))
    # decoding the codes gives the output back (padded frames: zero)
    decoded = jax.jit(grvq.decode)(out.state, ev.codes)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(ev.quantized), atol=ATOL)
    ref_decoded = ref.get_output_from_indices(torch.tensor(np.asarray(ev.codes)))
    np.testing.assert_allclose(np.asarray(decoded), ref_decoded.detach().numpy(), atol=ATOL)


def test_kmeans_iterations_match_reference(vqp):
    import torch

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 4)) * 3
    samples = (centres[rng.integers(0, 6, 90)] + rng.normal(size=(90, 4)) * 0.3).astype(np.float32)
    valid = np.ones(90, bool)
    valid[70:] = False
    start = samples[[0, 1, 2, 3, 4, 5, 6, 7]]  # 8 clusters for 6 blobs: some end empty and keep their centre
    means, bins = grvq.kmeans(jnp.asarray(samples), jnp.asarray(valid), jnp.asarray(start), 7)
    ref_means, ref_bins = vqp.vector_quantize_pytorch.kmeans(
        torch.tensor(samples[valid])[None], 8, 7, sample_fn=lambda s, n: torch.tensor(start)[None]
    )
    np.testing.assert_array_equal(np.asarray(bins), ref_bins[0].numpy().astype(np.float32))
    np.testing.assert_allclose(np.asarray(means), ref_means[0].numpy(), atol=ATOL)
    assert int(np.asarray(bins).sum()) == 70


def test_kmeans_init_and_dead_codes_match_reference(vqp):
    """The first training step from empty codebooks (k-means on each stage's input, then quantise, EMA, expire),
    with the reference drawing exactly the rows our keys draw."""
    import torch

    config = grvq.GRVQConfig(
        dim=8, groups=2, num_quantizers=2, codebook_size=12, decay=0.8, kmeans_iters=4, threshold_ema_dead_code=2.5
    )  # 0.8 * count + 0.2 * count' never equals 2.5: cluster_size == 2.5 marks exactly the replaced codes
    x, mask = inputs(config, frames=30, seed=4)
    flat_valid = mask.reshape(-1)
    rank = valid_rank(mask)
    key = jax.random.key(11)
    keys = grvq.codebook_keys(key, config)
    ref = reference(vqp, config)
    for g, q, cb in codebooks(ref):
        start = np.asarray(grvq.sample_rows(keys[g, q, 0], jnp.asarray(flat_valid), config.codebook_size))
        order = np.asarray(grvq.shuffled_valid_rows(jax.random.split(keys[g, q, 1])[1], jnp.asarray(flat_valid)))
        cb.sample_fn = lambda s, n, idx=rank[start]: s[:, idx]
        cb.replace_sample_fn = lambda s, n, idx=rank[order]: s[:, idx[:n]]
    ref.train()
    with torch.no_grad():
        q_ref, codes_ref, loss_ref = ref(torch.tensor(x), mask=torch.tensor(mask))

    state = grvq.init_state(config)
    assert not bool(state.initted)
    step = jax.jit(lambda s, x, k: grvq.quantize(s, x, k, config=config, mask=mask, training=True))
    out = step(state, jnp.asarray(x), key)
    np.testing.assert_array_equal(np.asarray(out.codes), codes_ref.numpy())
    np.testing.assert_allclose(np.asarray(out.quantized), q_ref.numpy(), atol=ATOL)
    np.testing.assert_allclose(np.asarray(out.commit_loss), loss_ref.numpy(), atol=ATOL)
    worst = assert_state_matches(out.state, ref)
    print(f"k-means init + dead codes: state max abs {worst:.2e}")
    replaced = np.asarray(out.state.cluster_size) == config.reset_size
    assert replaced.any()  # the first step did replace dead codes
    # a replaced code of a first stage is one of its group's real input rows (every row at most once)
    rows = x.reshape(-1, config.groups, config.group_dim)[flat_valid]
    for g in range(config.groups):
        new = np.asarray(out.state.embed[g, 0])[replaced[g, 0]]
        hits = [np.flatnonzero((rows[:, g] == r).all(-1)) for r in new]
        assert all(len(h) == 1 for h in hits) and len({int(h[0]) for h in hits}) == len(hits)
    # deterministic given the key; another key draws other rows
    again = step(state, jnp.asarray(x), key)
    other = step(state, jnp.asarray(x), jax.random.key(12))
    np.testing.assert_array_equal(np.asarray(again.state.embed), np.asarray(out.state.embed))
    assert not np.array_equal(np.asarray(other.state.embed), np.asarray(out.state.embed))
    # once initialised, k-means does not run again: the codes are the nearest codes of the trained codebooks
    later = step(out.state, jnp.asarray(x), jax.random.key(13))
    assert bool(later.state.initted)
    first = x.reshape(-1, config.groups, config.group_dim)[:, 0]
    nearest = np.asarray(grvq.nearest_code(jnp.asarray(first), out.state.embed[0, 0]))
    np.testing.assert_array_equal(np.asarray(later.codes)[0, ..., 0].reshape(-1)[flat_valid], nearest[flat_valid])


def test_more_dead_codes_than_rows():
    """With fewer real rows than dead codes, as many codes as rows are replaced (distinct rows), the rest stay dead."""
    config = grvq.GRVQConfig(dim=4, groups=1, codebook_size=32, kmeans_init=False, threshold_ema_dead_code=2.0)
    state = grvq.init_state(config, jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(1, 14, 4)).astype(np.float32)
    mask = np.zeros((1, 14), bool)
    mask[0, :10] = True
    step = jax.jit(lambda s, x, k: grvq.quantize(s, x, k, config=config, mask=mask, training=True))
    out = step(state, jnp.asarray(x), jax.random.key(1))
    replaced = np.asarray(out.state.cluster_size[0, 0]) == config.reset_size
    assert replaced.sum() == 10
    new = np.asarray(out.state.embed[0, 0])[replaced]
    idx = {int(np.flatnonzero((x[0, :10] == r).all(-1))[0]) for r in new}
    assert idx == set(range(10))  # every real row once, no padded row
    np.testing.assert_allclose(np.asarray(out.state.embed_avg[0, 0])[replaced], new * config.reset_size)


def test_presets_sharding_and_jit():
    from jax.sharding import Mesh

    from sovits2_jax.parallel.rules import SHARDING_RULES

    assert grvq.two_codebooks().num_codebooks == 2 and grvq.four_codebooks().num_codebooks == 4
    assert grvq.PRESETS["grvq4"]().group_dim == 384
    with pytest.raises(ValueError, match="does not divide"):
        grvq.GRVQConfig(dim=10, groups=3)
    config = grvq.four_codebooks(dim=16, codebook_size=8, kmeans_iters=2)
    devices = np.array(jax.devices()[:4]).reshape(1, 2, 2)
    mesh = Mesh(devices, ("data", "fsdp", "tensor"))
    rules = (*SHARDING_RULES, ("codebook", "tensor"))
    shardings = grvq.state_shardings(config, mesh, rules)
    assert shardings.embed.spec == jax.sharding.PartitionSpec(None, None, "tensor", "fsdp")
    assert shardings.cluster_size.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    state = jax.device_put(grvq.init_state(config), shardings)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 16)).astype(np.float32))

    def train_step(s, x, k):
        return grvq.quantize(s, x, k, config=config, training=True)

    step = jax.jit(train_step, out_shardings=grvq.GRVQOutput(None, None, None, shardings))
    out = step(state, x, jax.random.key(0))
    assert out.state.embed.sharding.spec == shardings.embed.spec
    plain = jax.jit(train_step)(grvq.init_state(config), x, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out.codes), np.asarray(plain.codes))
    np.testing.assert_allclose(np.asarray(out.state.embed), np.asarray(plain.state.embed), atol=ATOL)
