"""The gpt_sovits2 family's loss: reference-block targets as the layout builds them, and a packed row scoring
exactly what its examples score alone (no position sees another example; padding rows count for nothing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax.data import packing
from sovits2_jax.models import speech_lm as slm
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.text import layouts
from sovits2_jax.train.families import gpt_sovits2_ar as gpt_sovits2

SPEECH_TOKENS = 20
BACKBONE = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
EXAMPLES = [  # (texts, speeches): references first, the target last
    ([[1, 2, 3], [4, 5]], [[10, 11, 12], [13, 14]]),
    ([[6], [7, 8], [9, 10, 11]], [[1, 2], [3], [4, 5, 6, 7]]),
    ([[12, 13]], [[8, 9, 10]]),
]


def _examples(loss_on_references=False):
    return [
        layouts.gpt_sovits2_sequence(t, s, speech_token_size=SPEECH_TOKENS, loss_on_references=loss_on_references)
        for t, s in EXAMPLES
    ]


def _packed(rows, length=48):
    batch = packing.pack_rows(rows, length)
    batch["valid"] = batch["num_segments"] > 0
    return {k: jnp.asarray(v) for k, v in batch.items()}


def test_reference_targets_equal_the_layouts():
    got = gpt_sovits2.with_reference_targets(_packed([_examples()[:2], _examples()[2:]]))
    want = _packed([_examples(True)[:2], _examples(True)[2:]])["targets"]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int((want != -1).sum()) > int((_packed([_examples()[:2], _examples()[2:]])["targets"] != -1).sum())


@pytest.mark.parametrize("loss_on_references", [False, True])
def test_packed_loss_equals_each_example_alone(loss_on_references):
    cfg = slm.SpeechLMConfig(
        backbone=BACKBONE, speech_token_size=SPEECH_TOKENS, layout="gpt_sovits2", loss_on_references=loss_on_references
    )
    model = slm.SpeechLM(cfg, rngs=nnx.Rngs(0))
    loss = jax.jit(lambda m, b: gpt_sovits2.loss_fn({"model": m}, b, jax.random.key(0), True))
    examples = _examples()
    # every example packed into one row (plus two padding rows, valid False), and each example alone in its row
    packed_loss, packed_aux = loss(model, _packed([examples, [], []]))
    alone_loss, alone_aux = loss(model, _packed([[ex] for ex in examples]))
    assert float(packed_aux["weight"]) == float(alone_aux["weight"])
    np.testing.assert_allclose(float(packed_loss), float(alone_loss), rtol=1e-5)
    np.testing.assert_allclose(float(packed_aux["acc"]), float(alone_aux["acc"]), rtol=1e-6)
    targets = sum(len(s[-1]) + 1 for _, s in EXAMPLES)
    refs = sum(len(y) + 1 for _, s in EXAMPLES for y in s[:-1])
    assert float(packed_aux["weight"]) == targets + (refs if loss_on_references else 0)
