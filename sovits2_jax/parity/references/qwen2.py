"""Parity component ``qwen2``: transformers.Qwen2ForCausalLM vs our Qwen2ForCausalLM on the same HF directory."""

from __future__ import annotations

import tempfile

import numpy as np
from flax import nnx

from sovits2_jax.configs import qwen2 as qwen2_configs
from sovits2_jax.convert import hf_qwen2
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.random_reference import save_random_hf_qwen2
from sovits2_jax.parity.torch_refs import to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("qwen2",)

TINY = qwen2_configs.preset("tiny")
SEQ_LEN = 320  # RoPE errors hide in short prompts: compare over >= 300 positions.


def make_inputs(vocab_size: int, batch: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids, with every row after the first right-padded by a different amount."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (batch, seq_len)).astype(np.int64)
    mask = np.ones((batch, seq_len), np.int64)
    for b in range(1, batch):
        mask[b, seq_len - 17 * b :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def build(
    src: str | None,
    *,
    component: str = "qwen2",
    device="cpu",
    dtype="float32",
    seed=0,
    batch=2,
    seq_len=SEQ_LEN,
    with_reference: bool = True,
    **overrides,
) -> ParityCase:
    """The qwen2 case; ``with_reference=False`` skips loading the torch model (for callers that ran it already)."""
    import jax
    import torch
    import transformers

    if src is None:
        src = save_random_hf_qwen2(tempfile.mkdtemp(prefix="qwen2-ref-"), TINY, seed=seed)
    hf = hf_qwen2.read_hf_config(src)
    config = Qwen2Config.from_hf(hf, dtype=dtype, **overrides)
    flat = hf_qwen2.load_hf_params(src, config)
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]

    def make():
        return Qwen2ForCausalLM(config, rngs=nnx.Rngs(0))

    if config.scan_layers:
        from sovits2_jax.convert.mapping import stack_layers

        flat = stack_layers(flat, "model.layers")
    with jax.default_device(jax_device):
        graphdef, params = params_from_flat(make, flat)
    del flat  # the host copy; params now hold the weights

    tdev = torch_device(device)
    tdtype = getattr(torch, dtype)
    ref = None
    if with_reference:
        ref = transformers.Qwen2ForCausalLM.from_pretrained(src, dtype=tdtype, attn_implementation="eager").to(tdev)
        ref.eval()

    @jax.jit
    def forward(params, ids, mask):
        logits, _, hidden = nnx.merge(graphdef, params)(ids, attention_mask=mask.astype(bool), return_hidden=True)
        return logits, hidden[-1]

    def run_torch(inputs):
        with torch.no_grad():
            out = ref(
                input_ids=to_torch(inputs["input_ids"], tdev),
                attention_mask=to_torch(inputs["attention_mask"], tdev),
                output_hidden_states=True,
            )
        return {
            "logits": to_numpy(out.logits.float()),
            "last_hidden": to_numpy(out.hidden_states[-1].float()),
        }

    def run_jax(inputs):
        with jax.default_device(jax_device):
            logits, hidden = forward(params, inputs["input_ids"], inputs["attention_mask"])
        return {"logits": np.asarray(logits, np.float32), "last_hidden": np.asarray(hidden, np.float32)}

    inputs = make_inputs(config.vocab_size, batch, seq_len, seed)
    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, info={"config": config.to_dict(), "src": str(src)})
