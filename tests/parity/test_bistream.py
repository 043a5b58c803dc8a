"""Bistream inference against cosyvoice's ``Qwen2LM.inference_bistream``: with the same scripted token choices
on both sides (voluntary and forced fill tokens, then the final text and eos), every step's log-probabilities
and the yielded tokens agree, so the model saw the same input sequence."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.convert import cosyvoice2_llm
from sovits2_jax.convert.mapping import flatten
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.infer.bistream import bistream_generate
from sovits2_jax.infer.sampling import SamplingConfig
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.parity.references import llm as parity_llm

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

VOLUNTARY_FILLS = (3, 40)  # after the first fill the reference forces one every 16 tokens
FINAL_TOKENS = 12


def _script(n_out: int, text_ended: bool, n_final: int, size: int) -> int:
    if text_ended:
        return size if n_final >= FINAL_TOKENS else (n_out * 37 + 11) % size
    return size + 2 if n_out in VOLUNTARY_FILLS else (n_out * 53 + 7) % size


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import transformers.cache_utils as cache_utils

    if not hasattr(cache_utils.DynamicCache, "__getitem__"):
        # the reference indexes its cache as a tuple of layers (transformers < 5); give it that view
        cache_utils.DynamicCache.__getitem__ = lambda self, i: (self.layers[i].keys, self.layers[i].values)
    src = parity_llm.write_tiny_model_dir(tmp_path_factory.mktemp("bi") / "m", seed=2)
    config = parity_llm.read_model_dir(src)
    ref = parity_llm.reference_model(config, src / parity_llm.BLANK_EN)
    state = {k: v for k, v in torch.load(src / "llm.pt", weights_only=True).items() if torch.is_tensor(v)}
    ref.load_state_dict(state)
    nested = cosyvoice2_llm.load_llm_pt(src / "llm.pt", config)
    graphdef, params = params_from_flat(lambda: slm.SpeechLM(config, rngs=nnx.Rngs(0)), flatten(nested))
    return config, ref.eval(), graphdef, params


def test_bistream_matches_reference(setup):
    config, ref, graphdef, params = setup
    size = config.speech_token_size
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 500, n).tolist() for n in (3, 7, 2, 9, 4, 6, 1, 8)]
    prompt_text = rng.integers(0, 500, 8).tolist()
    prompt_speech = rng.integers(0, size, 32).tolist()

    ref_logps = []
    final_count = {"n": 0}

    def ref_sampling_ids(weighted_scores, decoded_tokens, sampling, ignore_eos=True):
        ref_logps.append(weighted_scores.numpy().copy())
        if not ignore_eos:
            final_count["n"] += 1
        return torch.tensor([_script(len(decoded_tokens), not ignore_eos, final_count["n"] - 1, size)])

    ref.sampling_ids = ref_sampling_ids
    with torch.no_grad():
        ref_tokens = list(
            ref.inference_bistream(
                text=(torch.tensor([p]) for p in pieces),
                prompt_text=torch.tensor([prompt_text]),
                prompt_text_len=torch.tensor([len(prompt_text)]),
                prompt_speech_token=torch.tensor([prompt_speech]),
                prompt_speech_token_len=torch.tensor([len(prompt_speech)]),
                embedding=torch.zeros(0, 192),
            )
        )

    our_logps = []
    ours_final = {"n": 0}

    def chooser(logits, tokens, text_ended):
        our_logps.append(np.asarray(jax.nn.log_softmax(logits)))
        if text_ended:
            ours_final["n"] += 1
        return _script(len(tokens), text_ended, ours_final["n"] - 1, size)

    ours = list(
        bistream_generate(
            graphdef, params, config, pieces, prompt_text, prompt_speech, jax.random.key(0), chooser=chooser
        )
    )
    assert ours == ref_tokens
    assert len(ref_tokens) > 60 and final_count["n"] == FINAL_TOKENS + 1
    assert len(our_logps) == len(ref_logps)
    np.testing.assert_allclose(np.stack(our_logps), np.stack(ref_logps), atol=1e-4, rtol=0)


def test_bistream_sampling_respects_phases(setup):
    config, _, graphdef, params = setup
    rng = np.random.default_rng(1)
    pieces = [rng.integers(0, 500, n).tolist() for n in (6, 6, 6)]
    a = list(
        bistream_generate(
            graphdef,
            params,
            config,
            pieces,
            [1, 2, 3],
            [4, 5, 6, 7],
            jax.random.key(5),
            sampling=SamplingConfig(),
            max_len=80,
        )
    )
    b = list(
        bistream_generate(
            graphdef,
            params,
            config,
            pieces,
            [1, 2, 3],
            [4, 5, 6, 7],
            jax.random.key(5),
            sampling=SamplingConfig(),
            max_len=80,
        )
    )
    assert a == b and 0 < len(a) <= 80
    assert all(0 <= t < config.speech_token_size for t in a)
