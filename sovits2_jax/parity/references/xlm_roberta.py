"""Parity component ``xlm_roberta``: transformers.XLMRobertaModel vs our XLMRobertaModel (GPT-SoVITS2's BGE-M3
text encoder) on the same HF directory: the last hidden state and, when the checkpoint has one, the pooler output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.convert import hf_xlm_roberta
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models import xlm_roberta
from sovits2_jax.models.xlm_roberta import XLMRobertaConfig, XLMRobertaModel
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.torch_refs import to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("xlm_roberta",)

TINY = xlm_roberta.tiny()
SEQ_LEN = 320  # position-table errors hide in short inputs: compare over >= 300 positions
BOS, EOS = 0, 2


def save_random_hf_xlm_roberta(
    directory: str | Path, config: XLMRobertaConfig, seed: int = 0, dtype: str = "float32"
) -> Path:
    """Writes a random-init ``transformers.XLMRobertaModel`` of ``config``'s shape (a pooler when
    ``config.with_pooler``) with ``save_pretrained``."""
    import torch
    import transformers

    hf = config.to_hf()
    for key in ("architectures", "model_type", "position_embedding_type"):
        hf.pop(key)
    torch.manual_seed(seed)
    model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**hf), add_pooling_layer=config.with_pooler)
    model = model.to(getattr(torch, dtype))
    # Random biases and LayerNorm scales too (and a non-zero padding row), so a converter that drops or swaps
    # any of them cannot pass parity; projections at unit gain, so that activations reach the range where the
    # exact and the tanh GELU differ.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.normal_(1.0 if name.endswith("LayerNorm.weight") else 0.0, 0.1)
            elif "embeddings" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory


def make_inputs(config: XLMRobertaConfig, batch: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """<s> random ids </s> rows; every row after the first is shorter and padded with the pad id (the attention
    mask says so too): on the right, and the last row of several on the left, where positions must still count
    from the first real token. Ids avoid the special ones, so positions count every row token."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, config.vocab_size, (batch, seq_len)).astype(np.int64)
    mask = np.ones((batch, seq_len), np.int64)
    shrink = min(23, (seq_len - 2) // max(batch - 1, 1))
    for b in range(batch):
        length = seq_len - shrink * b
        start = seq_len - length if b == batch - 1 and b > 1 else 0
        ids[b, start], ids[b, start + length - 1] = BOS, EOS
        ids[b, :start] = ids[b, start + length :] = config.pad_token_id
        mask[b, :start] = mask[b, start + length :] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if config.type_vocab_size > 1:
        out["token_type_ids"] = (np.arange(seq_len)[None, :] >= seq_len // 2).astype(np.int64).repeat(batch, 0)
    return out


def build(
    src: str | None,
    *,
    component: str = "xlm_roberta",
    device="cpu",
    dtype="float32",
    seed=0,
    batch=3,
    seq_len=SEQ_LEN,
    **overrides,
) -> ParityCase:
    """The xlm_roberta case: our encoder loaded through the converter from the directory the reference loads."""
    import jax
    import torch
    import transformers

    if src is None:
        src = save_random_hf_xlm_roberta(tempfile.mkdtemp(prefix="xlm-roberta-ref-"), TINY, seed=seed)
    base, prefix = hf_xlm_roberta.source_config(src)
    config = XLMRobertaConfig(**{**base.to_dict(), "dtype": dtype, **overrides})
    flat = hf_xlm_roberta.load_hf_params(src, base, prefix)
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    with jax.default_device(jax_device):
        graphdef, params = params_from_flat(lambda: XLMRobertaModel(config, rngs=nnx.Rngs(0)), flat)
    del flat

    tdev = torch_device(device)
    ref = transformers.XLMRobertaModel.from_pretrained(
        src, dtype=getattr(torch, dtype), attn_implementation="eager", add_pooling_layer=config.with_pooler
    ).to(tdev)
    ref.eval()

    @jax.jit
    def forward(params, inputs):
        model = nnx.merge(graphdef, params)
        hidden = model(inputs["input_ids"], inputs["attention_mask"].astype(bool), inputs.get("token_type_ids"))
        return {"last_hidden": hidden, **({"pooler": model.pool(hidden)} if config.with_pooler else {})}

    def run_torch(inputs):
        with torch.no_grad():
            out = ref(**{k: to_torch(v, tdev) for k, v in inputs.items()})
        result = {"last_hidden": to_numpy(out.last_hidden_state.float())}
        if config.with_pooler:
            result["pooler"] = to_numpy(out.pooler_output.float())
        return result

    def run_jax(inputs):
        with jax.default_device(jax_device):
            out = forward(params, inputs)
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    inputs = make_inputs(config, batch, seq_len, seed)
    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, info={"config": config.to_dict(), "src": str(src)})
