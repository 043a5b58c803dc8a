"""Importing the PyTorch reference implementations (cosyvoice-minicpmo, gpt-sovits-infer) offline."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import numpy as np


def stub_torchaudio() -> None:
    """Puts an empty torchaudio module in sys.modules (reference code imports it at module level)."""
    # No CPU torchaudio wheel exists here; cosyvoice's file utils import it at module level but the modules we
    # compare against never call it.
    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


def import_cosyvoice(module: str = "cosyvoice") -> types.ModuleType:
    """Imports a cosyvoice module with the torchaudio stub in place (matcha/diffusers users first)."""
    stub_torchaudio()
    importlib.import_module("matcha")
    importlib.import_module("diffusers")
    return importlib.import_module(module)


def import_gpt_sovits(module: str = "gpt_sovits.module.models") -> types.ModuleType:
    stub_torchaudio()
    return importlib.import_module(module)


def to_numpy(t) -> np.ndarray:
    from sovits2_jax.convert.torch_io import tensor_to_numpy

    return tensor_to_numpy(t)


def to_torch(a, device: str = "cpu"):
    from sovits2_jax.convert.torch_io import numpy_to_tensor

    return numpy_to_tensor(np.asarray(a)).to(device)


def config_kwargs(config, names: str) -> dict:
    """``{name: config.name}`` for the space-separated ``names``, tuples as (nested) lists: the reference
    constructors take hparams-style lists."""

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {name: plain(getattr(config, name)) for name in names.split()}


def torch_device(device: str) -> str:
    """'cpu' or 'cuda' for the parity harness's --device cpu|gpu; on CUDA, TF32 is switched off (fp32 parity
    compares true fp32 matmuls on both sides: see ``registry.run``'s matmul precision for ours)."""
    if device != "gpu":
        return "cpu"
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return "cuda"
