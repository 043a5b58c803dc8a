"""Random-initialised PyTorch reference checkpoints (no downloads): the demo's and the tests' sources."""

from __future__ import annotations

from pathlib import Path

from sovits2_jax.models.qwen2 import Qwen2Config


def save_random_hf_qwen2(
    directory: str | Path, config: Qwen2Config, seed: int = 0, dtype: str = "float32"
) -> Path:
    """Writes a random-init ``transformers`` Qwen2ForCausalLM with ``config``'s shape via ``save_pretrained``."""
    import torch
    import transformers

    hf = config.to_hf()
    hf.pop("architectures"), hf.pop("model_type"), hf.pop("torch_dtype")
    rope_theta = hf.pop("rope_theta")
    hf_config = transformers.Qwen2Config(
        **hf, rope_parameters={"rope_type": "default", "rope_theta": rope_theta}
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(hf_config).to(getattr(torch, dtype))
    # Random biases and norm scales too, so a converter that drops or swaps them cannot pass parity.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(1.0 if "norm" in name else 0.0, 0.1)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory
