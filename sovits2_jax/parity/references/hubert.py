"""Parity component ``hubert``: transformers.HubertModel vs our HubertModel on the same HF directory.

The reference runs as transformers is meant to be called for each variant: a "group" model (HuBERT base,
chinese-hubert-base) gets no attention mask, so each row runs alone on its real samples (GPT-SoVITS's call); a
"layer" model runs the padded batch with ``attention_mask``. Ours runs the padded batch with the row lengths. The
compared output is ``last_hidden_state`` with each row's padded frames set to zero on both sides.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.convert import hf_hubert
from sovits2_jax.convert.params import params_from_flat
from sovits2_jax.models.hubert import HubertConfig, HubertModel, output_lengths, tiny
from sovits2_jax.parity.compare import MODEL_ATOL, ParityCase
from sovits2_jax.parity.torch_refs import to_numpy, to_torch, torch_device

# the parity components this reference builds (found by sovits2_jax.parity.registry)
COMPONENTS = ("hubert",)

TINY = tiny()
SECONDS = 5.0  # the longest row; the second row is shorter and padded


def save_random_hf_hubert(
    directory: str | Path, config: HubertConfig, seed: int = 0, dtype: str = "float32", legacy: bool = False
) -> Path:
    """Writes a random-init ``transformers.HubertModel`` of ``config``'s shape with ``save_pretrained``; ``legacy``
    rewrites it as chinese-hubert-base is stored (``weight_g`` / ``weight_v`` keys in ``pytorch_model.bin``)."""
    import torch
    import transformers

    from sovits2_jax.convert.torch_io import save_torch_state_dict, tensor_to_numpy

    hf = config.to_hf()
    hf.pop("architectures"), hf.pop("model_type")
    torch.manual_seed(seed)
    model = transformers.HubertModel(transformers.HubertConfig(**hf)).to(getattr(torch, dtype))
    # Random biases, norm affines and weight-norm gains, so a converter that drops or swaps them cannot pass parity.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.1)
            elif name.endswith("original0"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    directory = Path(directory)
    model.save_pretrained(directory)
    if legacy:
        state = {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): tensor_to_numpy(v)
            for k, v in model.state_dict().items()
        }
        (directory / "model.safetensors").unlink()
        save_torch_state_dict(state.items(), directory / "pytorch_model.bin")
    return directory


def make_inputs(config: HubertConfig, batch: int, seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Speech-like rows (a few harmonics with vibrato plus noise), the first ``seconds`` long and each later one
    shorter by a different amount, zero-padded, with their ``attention_mask``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * config.sample_rate)
    t = np.arange(n) / config.sample_rate
    wav = np.zeros((batch, n), np.float32)
    mask = np.zeros((batch, n), np.int64)
    for b in range(batch):
        length = n - b * int(0.63 * config.sample_rate) - 37 * b
        f0 = rng.uniform(90, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
        phase = 2 * np.pi * np.cumsum(f0) / config.sample_rate
        row = sum(np.sin(h * phase) / h for h in range(1, 6)) * 0.2 + rng.normal(0, 0.02, n)
        wav[b, :length] = row[:length]
        mask[b, :length] = 1
    return {"input_values": wav, "attention_mask": mask}


def _zero_padding(hidden: np.ndarray, frames: np.ndarray) -> np.ndarray:
    hidden = np.array(hidden, np.float32)
    for b, f in enumerate(frames):
        hidden[b, int(f) :] = 0
    return hidden


def build(
    src: str | None,
    *,
    component: str = "hubert",
    device="cpu",
    dtype="float32",
    seed=0,
    batch=2,
    seconds=SECONDS,
    with_reference: bool = True,
) -> ParityCase:
    """The hubert case (random-init tiny reference when ``src`` is None)."""
    import jax
    import torch
    import transformers

    if src is None:
        src = save_random_hf_hubert(tempfile.mkdtemp(prefix="hubert-ref-"), TINY, seed=seed)
    config = hf_hubert.config_from_hf(hf_hubert.read_hf_config(src), src, dtype=dtype)
    flat, _ = hf_hubert.load_hf_params(src, config)
    jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    with jax.default_device(jax_device):
        graphdef, params = params_from_flat(lambda: HubertModel(config, rngs=nnx.Rngs(0)), flat)
    del flat

    tdev = torch_device(device)
    ref = None
    if with_reference:
        ref = transformers.HubertModel.from_pretrained(src, dtype=getattr(torch, dtype), attn_implementation="eager")
        ref = ref.to(tdev).eval()

    @jax.jit
    def forward(params, wav, lengths):
        return nnx.merge(graphdef, params)(wav, lengths)

    def frames(inputs) -> np.ndarray:
        return output_lengths(config, inputs["attention_mask"].sum(-1))

    def run_torch(inputs):
        wav, mask = inputs["input_values"], inputs["attention_mask"]
        t_out = output_lengths(config, wav.shape[1])
        with torch.no_grad():
            if config.feat_extract_norm == "layer":
                out = ref(to_torch(wav, tdev).to(ref.dtype), attention_mask=to_torch(mask, tdev))
                hidden = to_numpy(out.last_hidden_state.float())
            else:
                hidden = np.zeros((wav.shape[0], t_out, config.hidden_size), np.float32)
                for b in range(wav.shape[0]):
                    row = to_torch(wav[b : b + 1, : int(mask[b].sum())], tdev).to(ref.dtype)
                    h = to_numpy(ref(row).last_hidden_state.float())[0]
                    hidden[b, : h.shape[0]] = h
        return {"last_hidden_state": _zero_padding(hidden, frames(inputs))}

    def run_jax(inputs):
        with jax.default_device(jax_device):
            lengths = inputs["attention_mask"].sum(-1).astype(np.int32)
            hidden = forward(params, inputs["input_values"], lengths)
        return {"last_hidden_state": _zero_padding(np.asarray(hidden, np.float32), frames(inputs))}

    inputs = make_inputs(config, batch, seconds, seed)
    info = {"config": config.to_dict(), "src": str(src)}
    return ParityCase(inputs, run_torch, run_jax, atol=MODEL_ATOL, info=info)
