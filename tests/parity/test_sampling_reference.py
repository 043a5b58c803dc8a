"""Sampling against cosyvoice's own ``nucleus_sampling`` / ``ras_sampling`` / ``sampling_ids`` with replayed draws.

Our samplers take explicit uniforms; torch's side draws with ``Tensor.multinomial``. The replay makes that call
return the index the same uniform selects from the weights torch passes it (inverse CDF: the first i with
u * total < cdf[i]), so both sides consume one draw and every other step (sorting, the top-p / top-k cut, the
repetition window, the eos retries) is cosyvoice's code.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sovits2_jax.infer import sampling

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ref():
    from sovits2_jax.parity.torch_refs import import_cosyvoice

    common = import_cosyvoice("cosyvoice.utils.common")
    llm = import_cosyvoice("cosyvoice.llm.llm")
    return types.SimpleNamespace(
        nucleus=common.nucleus_sampling, ras=common.ras_sampling, sampling_ids=llm.Qwen2LM.sampling_ids
    )


class Replay:
    """Stands in for ``Tensor.multinomial(1, replacement=True)``: hands out queued uniforms in call order."""

    def __init__(self):
        self.queue: list[float] = []
        self.calls = 0

    def multinomial(self, weights, num_samples, replacement=False, **_):
        assert num_samples == 1 and weights.dim() == 1, "the reference draws one sample from a 1-D vector"
        w = weights.detach().numpy().astype(np.float32)
        cdf = np.cumsum(w, dtype=np.float32)
        idx = int(np.searchsorted(cdf, np.float32(self.queue.pop(0)) * cdf[-1], side="right"))
        self.calls += 1
        return torch.tensor([min(idx, int(np.flatnonzero(w > 0)[-1]))])


@pytest.fixture
def replay(monkeypatch):
    r = Replay()
    monkeypatch.setattr(torch.Tensor, "multinomial", lambda self, n, replacement=False, **kw: r.multinomial(self, n))
    return r


def _logits(rng, b, v, scale):
    return (rng.normal(size=(b, v)) * np.broadcast_to(scale, (b, 1))).astype(np.float32)


def _torch_probs(logits):
    """The probabilities cosyvoice samples from (its softmax), given to our explicit-uniform samplers too."""
    return torch.from_numpy(logits).softmax(dim=-1).numpy()


@pytest.mark.parametrize("top_p,top_k", [(0.8, 25), (0.5, 3), (0.95, 500), (1.0, 7)])
def test_nucleus_equals_cosyvoice(ref, replay, top_p, top_k):
    rng = np.random.default_rng(0)
    b, v = 160, 200
    logits = _logits(rng, b, v, np.linspace(0.3, 6.0, b)[:, None])
    u = rng.uniform(size=b).astype(np.float32)
    ours = np.asarray(
        sampling.nucleus_sample(jnp.asarray(_torch_probs(logits)), jnp.asarray(u), top_p=top_p, top_k=top_k)
    )
    theirs = []
    for i in range(b):
        replay.queue = [u[i]]
        theirs.append(int(ref.nucleus(torch.from_numpy(logits[i]), top_p=top_p, top_k=top_k)))
    np.testing.assert_array_equal(ours, theirs)
    assert replay.calls == b
    assert len(set(theirs) - set(np.argmax(logits, axis=-1).tolist())) > 0, "draws beyond the argmax"


def test_ras_equals_cosyvoice_both_branches(ref, replay):
    rng = np.random.default_rng(1)
    b, v, w = 200, 60, 14
    logits = _logits(rng, b, v, 3.0)
    probs = _torch_probs(logits)
    # histories of each row's likely tokens, of every length up to the window, so that repetitions happen
    likely = np.argsort(-probs, axis=-1)[:, :4]
    hist_len = rng.integers(0, w + 1, size=b)
    recent = np.take_along_axis(likely, rng.integers(0, 4, size=(b, w)), axis=-1).astype(np.int32)
    valid = np.arange(w)[None, :] >= (w - hist_len)[:, None]
    u1, u2 = rng.uniform(size=(2, b)).astype(np.float32)
    ours = np.asarray(
        sampling.ras_sample(
            *map(jnp.asarray, (probs, u1, u2, recent, valid)), top_p=0.8, top_k=25, win_size=10, tau_r=0.1
        )
    )
    theirs, fallbacks = [], 0
    for i in range(b):
        replay.queue = [u1[i], u2[i]]
        decoded = recent[i][valid[i]].tolist()
        theirs.append(int(ref.ras(torch.from_numpy(logits[i]), decoded, None, top_p=0.8, top_k=25, win_size=10)))
        fallbacks += len(replay.queue) == 0  # the full-distribution draw consumed the second uniform
    np.testing.assert_array_equal(ours, theirs)
    assert 20 < fallbacks < b - 20, f"both RAS branches must be exercised often, got {fallbacks} fallbacks"


def test_eos_retries_equal_cosyvoice_sampling_ids(ref, replay):
    """``sample_tokens`` with eos forbidden = ``sampling_ids(ignore_eos=True)``: draws are repeated (trial t
    uses the uniforms of fold_in(key, t)) until a non-eos token comes, trial for trial; with ignore_eos=False
    eos may come out; where the reference gives up after max_trials, ours falls back to a non-eos draw."""
    rng = np.random.default_rng(2)
    b, v, eos, w = 48, 43, 40, 10
    logits = _logits(rng, b, v, 2.0)
    logits[:, eos] = np.log(np.linspace(0.3, 0.85, b)) - np.log(1 - np.linspace(0.3, 0.85, b)) + 3.0  # eos likely
    hopeless = [5, 17]
    logits[hopeless, eos] = 60.0  # only eos survives the nucleus and the full draw
    ignore_eos = np.arange(b) % 3 != 0
    recent = rng.integers(0, eos, size=(b, w)).astype(np.int32)
    cfg = sampling.SamplingConfig()
    keys = jax.random.split(jax.random.key(3), b)
    forbidden = jnp.zeros((b, v), bool).at[:, eos].set(jnp.asarray(ignore_eos))
    ours = np.asarray(
        jax.jit(sampling.sample_tokens, static_argnums=(2,))(
            jnp.asarray(logits), keys, cfg, recent=jnp.asarray(recent), recent_valid=jnp.ones((b, w), bool),
            forbidden=forbidden,
        )
    )  # fmt: skip
    trial_uniforms = jax.jit(jax.vmap(lambda k, t: jax.random.uniform(jax.random.fold_in(k, t), (2,)), (None, 0)))

    trials = []
    for i in range(b):
        u = np.asarray(trial_uniforms(keys[i], jnp.arange(cfg.max_trials + 1)))
        count = {"trials": 0}

        def ras_trial(weighted_scores, decoded, s, u=u, count=count):
            replay.queue = list(u[count["trials"]])  # trial t consumes the uniforms of fold_in(key, t)
            count["trials"] += 1
            return ref.ras(weighted_scores, decoded, s, top_p=cfg.top_p, top_k=cfg.top_k, win_size=cfg.win_size)

        model = types.SimpleNamespace(sampling=ras_trial, speech_token_size=eos)
        args = (model, torch.from_numpy(logits[i]), recent[i].tolist(), None)
        if i in hopeless and ignore_eos[i]:
            with pytest.raises(RuntimeError, match="max_trials"):
                ref.sampling_ids(*args, ignore_eos=True)
            assert count["trials"] == cfg.max_trials + 1 and ours[i] != eos
            continue
        assert int(ref.sampling_ids(*args, ignore_eos=bool(ignore_eos[i]))) == ours[i], f"row {i}"
        trials.append(count["trials"])
    assert max(trials) >= 4, "some rows must need several eos retries"
    assert (ours[~ignore_eos] == eos).any() and not (ours[ignore_eos] == eos).any()
