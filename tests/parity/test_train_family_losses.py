"""The dpo and flow families' training losses against cosyvoice's own training computation on fixed batches:
DPO = cosyvoice's DPOLoss on two Qwen2LMs (policy, frozen reference) + the policy's SFT CE (``batch_forward``);
flow = ``CausalMaskedDiffWithXvec.forward`` with our random draws replayed into its ``random`` / ``torch.rand``."""

from __future__ import annotations

import contextlib
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert import cosyvoice2_llm
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.parity.references import flow as parity_flow
from sovits2_jax.parity.references import llm as parity_llm
from sovits2_jax.train.families import dpo
from sovits2_jax.train.families import flow as flow_family

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity


def _pair(model_dir):
    """(torch Qwen2LM, our SpeechLM) with the weights of ``model_dir``'s llm.pt."""
    config = parity_llm.read_model_dir(model_dir)
    ref = parity_llm.reference_model(config, model_dir / parity_llm.BLANK_EN)
    state = {k: v for k, v in torch.load(model_dir / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    ref.load_state_dict(state, strict=True)
    nested = cosyvoice2_llm.load_llm_pt(model_dir / "llm.pt", config)
    graphdef, params = params_from_flat(lambda: slm.SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))
    return ref.eval(), nnx.merge(graphdef, params)


def _row_logps(ref, batch, uniform):
    """Per-row mean target log-probs of chosen then rejected rows, from the torch model's own logits/targets."""
    combined = dict(
        text_token=np.concatenate([batch["text_token"]] * 2),
        text_token_len=np.concatenate([batch["text_token_len"]] * 2),
        speech_token=np.concatenate([batch["speech_token"], batch["reject_speech_token"]]),
        speech_token_len=np.concatenate([batch["speech_token_len"], batch["reject_speech_token_len"]]),
        bistream_uniform=uniform,
    )
    pieces = parity_llm.reference_outputs(ref, combined)
    targets = torch.as_tensor(pieces["targets"]).long()
    scored = targets != -1
    picked = torch.log_softmax(torch.as_tensor(pieces["logits"]), -1).gather(-1, targets.clamp(min=0)[..., None])
    return (picked[..., 0] * scored).sum(1) / scored.sum(1)


def test_dpo_family_loss_matches_cosyvoice_batch_forward(tmp_path):
    import cosyvoice.utils.losses as ref_losses

    ref_pol, pol = _pair(parity_llm.write_tiny_model_dir(tmp_path / "policy", seed=0))
    ref_ref, frozen = _pair(parity_llm.write_tiny_model_dir(tmp_path / "reference", seed=5))
    rng = np.random.default_rng(3)
    b, beta = 3, 0.5
    batch = dict(
        text_token=rng.integers(0, 500, (b, 12)),
        text_token_len=np.asarray([12, 7, 4]),
        speech_token=rng.integers(0, 100, (b, 60)),
        speech_token_len=np.asarray([60, 30, 45]),
        reject_speech_token=rng.integers(0, 100, (b, 60)),
        reject_speech_token_len=np.asarray([52, 21, 60]),
    )
    # ours gets one more row, a padding row (valid False, as the data task fills a short batch): it must count
    # for nothing, so the reference sees the b real rows with the draws ours gave them
    padded = {k: jnp.asarray(np.concatenate([v, np.zeros_like(v[:1])])) for k, v in batch.items()}
    padded["valid"] = jnp.asarray([True] * b + [False])
    key = jax.random.key(11)
    drawn = np.asarray(dpo.bistream_uniform(key, 2 * (b + 1)), np.float64)
    uniform = np.concatenate([drawn[:b], drawn[b + 1 : 2 * b + 1]])
    assert (uniform < 0.5).any() and (uniform >= 0.5).any()

    with torch.no_grad(), parity_llm.replayed_draws(uniform):
        sft = ref_pol.forward_dpo({k: torch.as_tensor(v) for k, v in batch.items()}, torch.device("cpu"))["loss"]
    pol_logps, ref_logps = _row_logps(ref_pol, batch, uniform), _row_logps(ref_ref, batch, uniform)
    pref, chosen_r, rejected_r = ref_losses.DPOLoss(beta=beta)(
        pol_logps[:b], pol_logps[b:], ref_logps[:b], ref_logps[b:]
    )
    assert abs(float(pref) - np.log(2)) > 1e-3 and float(sft) > 1.0  # both terms matter

    loss, aux = jax.jit(lambda m, bt, k: dpo.dpo_sft_loss(m, bt, k, beta=beta))(
        {"model": pol, "reference": frozen}, padded, key
    )
    np.testing.assert_allclose(float(loss), float(pref + sft), atol=1e-4, rtol=0)
    np.testing.assert_allclose(float(aux["sft_loss"]), float(sft), atol=1e-4, rtol=0)
    np.testing.assert_allclose(float(aux["chosen_reward"]), float(chosen_r.mean()), atol=1e-5)
    np.testing.assert_allclose(float(aux["rejected_reward"]), float(rejected_r.mean()), atol=1e-5)
    np.testing.assert_allclose(float(aux["dpo_acc"]), float((chosen_r > rejected_r).float().mean()), atol=1e-6)
    assert float(aux["weight"]) == b


@contextlib.contextmanager
def _replayed_flow_draws(draws: dict, cond_len: np.ndarray):
    """cosyvoice's flow forward draws streaming and the prompt prefixes from ``random`` and t, noise and the CFG
    keep flags from ``torch.rand`` / ``torch.randn_like``: make them return ours."""
    import cosyvoice.flow.flow as flow_module

    calls = [0.1 if bool(draws["streaming"]) else 0.9]
    for c in cond_len:
        calls.append(0.9 if c > 0 else 0.1)  # >= 0.5: this row takes a prefix of randint(...) frames
    prefixes = [int(c) for c in cond_len if c > 0]

    class _Random:
        @staticmethod
        def random():
            return calls.pop(0)

        @staticmethod
        def randint(lo, hi):
            value = prefixes.pop(0)
            assert lo <= value <= hi, (value, lo, hi)
            return value

    t = torch.as_tensor(np.array(draws["t"]))[:, None, None]
    keep = torch.as_tensor(np.where(np.asarray(draws["keep_cond"]), 0.9, 0.1).astype(np.float32))
    noise = torch.as_tensor(np.asarray(draws["noise"]).transpose(0, 2, 1).copy())
    rands = [t, keep]
    with (
        mock.patch.object(flow_module, "random", _Random()),
        mock.patch("torch.rand", side_effect=lambda *a, **k: rands.pop(0)),
        mock.patch("torch.randn_like", side_effect=lambda x: noise),
    ):
        yield
    assert not calls and not prefixes and not rands, "the reference drew fewer numbers than replayed"


_flow_loss = jax.jit(lambda m, bt, k: flow_family.cfm_loss(m, bt, k, train=False))


@pytest.mark.parametrize("seed", [1, 2])  # 1: streaming attention; 2: full attention and one CFG drop
def test_flow_family_loss_matches_cosyvoice_forward(seed):
    config, ref, _, graphdef, params, _, _ = parity_flow._setup(
        None, size="tiny", device="cpu", seed=0, config_overrides={"zero_padding_before_lookahead": False}
    )
    rng = np.random.default_rng(seed)
    b, tokens, ratio = 3, 40, config.token_mel_ratio
    token_len = np.asarray([tokens, tokens - 9, tokens - 17])
    batch = dict(
        speech_token=rng.integers(0, config.vocab_size, (b, tokens)).astype(np.int32),
        speech_token_len=token_len.astype(np.int32),
        speech_feat=rng.standard_normal((b, ratio * tokens, config.output_size)).astype(np.float32),
        speech_feat_len=(ratio * token_len).astype(np.int32),
        embedding=rng.standard_normal((b, config.spk_embed_dim)).astype(np.float32),
        cond_len=np.asarray([0, 17, 5], np.int32),
    )
    key = jax.random.key(seed)
    draws = flow_family.training_draws(key, batch, config)
    np.testing.assert_array_equal(np.asarray(draws["cond_lengths"]), batch["cond_len"])  # the data task's prefixes
    model = nnx.merge(graphdef, params)
    ours = _flow_loss({"model": model}, batch, key)
    with torch.no_grad(), _replayed_flow_draws(draws, batch["cond_len"]):
        want = ref.forward({k: torch.as_tensor(v) for k, v in batch.items() if k != "cond_len"}, "cpu")["loss"]
    np.testing.assert_allclose(float(ours[0]), float(want), atol=1e-5, rtol=1e-4)
    assert float(ours[1]["weight"]) == float(ratio * token_len.sum())
