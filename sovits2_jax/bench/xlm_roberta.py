"""XLM-RoBERTa (BGE-M3 text encoder) forward throughput: ours (jitted) vs transformers (PyTorch), same weights and
batch, in microseconds per real (non-pad) token.

python -m sovits2_jax.bench.xlm_roberta [--size=small|tiny|bge_m3] [--batch=8] [--seq_len=128] [--dtype=float32]

Both sides load one random-init ``XLMRobertaModel`` directory (ours through the converter); transformers runs its
SDPA attention under ``torch.inference_mode``. Rows are padded as in the parity case. ``--size=bge_m3`` is the real
shape (568M parameters: a 2.3 GB directory is written first).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from absl import flags

from sovits2_jax import cli

SIZES = ("tiny", "small", "bge_m3")
_SIZE = flags.DEFINE_enum("size", "small", list(SIZES), "encoder size (models/xlm_roberta.py presets)")
_BATCH = flags.DEFINE_integer("batch", 8, "rows per batch")
_SEQ = flags.DEFINE_integer("seq_len", 128, "tokens per row (the longest row)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype of both sides")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds per side, interleaved, after a warm-up")


def main(argv) -> int:
    del argv
    from sovits2_jax.models import xlm_roberta

    config = getattr(xlm_roberta, _SIZE.value)(with_pooler=False)  # features only, as GPT-SoVITS2 uses them
    if _SEQ.value > config.max_tokens:
        raise cli.Error(f"--seq_len={_SEQ.value} is longer than the {config.max_tokens} tokens the model takes")
    with tempfile.TemporaryDirectory(prefix="bench-xlm-roberta-") as workdir:  # the reference's weights
        _measure(config, Path(workdir) / "hf")
    return 0


def _measure(config, src: Path) -> str:
    """Times ours against transformers on one random-init model written to ``src``, per real (non-pad) token."""
    import dataclasses

    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from sovits2_jax.bench.timing import compare, machine_line, pin_threads
    from sovits2_jax.convert import hf_xlm_roberta
    from sovits2_jax.convert.params import params_from_flat
    from sovits2_jax.models.xlm_roberta import XLMRobertaModel
    from sovits2_jax.parity.references.xlm_roberta import make_inputs, save_random_hf_xlm_roberta

    save_random_hf_xlm_roberta(src, config)
    ours_config = dataclasses.replace(config, dtype=_DTYPE.value)
    graphdef, params = params_from_flat(
        lambda: XLMRobertaModel(ours_config, rngs=nnx.Rngs(0)), hf_xlm_roberta.load_hf_params(src, config)
    )
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    inputs = make_inputs(config, _BATCH.value, _SEQ.value, seed=0)
    tokens = int(inputs["attention_mask"].sum())

    @jax.jit
    def forward(params, ids, mask):
        return nnx.merge(graphdef, params)(ids, mask)

    ids_j, mask_j = jax.numpy.asarray(inputs["input_ids"]), jax.numpy.asarray(inputs["attention_mask"].astype(bool))
    pin_threads()

    ref = transformers.XLMRobertaModel.from_pretrained(
        src, dtype=getattr(torch, _DTYPE.value), attn_implementation="sdpa", add_pooling_layer=False
    ).eval()
    ids_t, mask_t = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])

    def torch_forward():
        with torch.inference_mode():
            ref(input_ids=ids_t, attention_mask=mask_t)

    print(machine_line(), flush=True)
    print(f"# {n_params / 1e6:.1f}M parameters, {jax.devices()[0].platform}")
    what = f"encode ({_SIZE.value}, {_DTYPE.value}, batch {_BATCH.value}x{_SEQ.value}, {tokens} real tokens)"
    return compare("xlm_roberta", what, lambda: jax.block_until_ready(forward(params, ids_j, mask_j)), torch_forward,
                   unit="us/token", scale=1e6 / tokens, repeats=_REPEATS.value)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
