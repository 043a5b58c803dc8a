"""A CosyVoice2 directory we export (``sovits2_jax.convert.cosyvoice2_export``, no release to copy from) opens
with the reference package's own loader, ``cosyvoice.cli.cosyvoice.CosyVoice2(model_dir)``: its yaml builds every
module (the llm from our CosyVoice-BlankEN), the state dicts load strictly, its tokenizer (transformers reading the
tokenizer files we write) encodes as ours does, and it synthesises speech tokens into audio.

Stand-ins, as for the other parity tests: ``modelscope`` (the hub download, never reached for a local directory)
and ``torchaudio`` (no CPU build for this torch): its ``compliance.kaldi.fbank`` and ``transforms.Resample`` are
ours (Kaldi fbank and resampling, each tested against its reference elsewhere)."""

from __future__ import annotations

import importlib.machinery
import shutil
import sys
import types

import numpy as np
import pytest


def _module(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = module
    return module


def _stand_ins() -> None:
    import torch

    from sovits2_jax.audio.fbank import fbank
    from sovits2_jax.audio.resample import resample
    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    kaldi = _module("torchaudio.compliance.kaldi")
    kaldi.fbank = lambda wav, num_mel_bins=80, dither=0, sample_frequency=16000: torch.from_numpy(
        fbank(wav[0].numpy(), sample_rate=sample_frequency, num_mel_bins=num_mel_bins)
    )
    _module("torchaudio.compliance").kaldi = kaldi
    sys.modules["torchaudio"].compliance = sys.modules["torchaudio.compliance"]

    class Resample:
        def __init__(self, orig_freq: int, new_freq: int):
            self.orig, self.new = orig_freq, new_freq

        def __call__(self, x):
            return torch.from_numpy(np.stack([resample(row.numpy(), self.orig, self.new) for row in x]))

    _module("torchaudio.transforms").Resample = Resample
    sys.modules["torchaudio"].transforms = sys.modules["torchaudio.transforms"]

    def no_hub(*args, **kwargs):
        raise AssertionError("CosyVoice2 tried to download a model")

    _module("modelscope").snapshot_download = no_hub


@pytest.fixture(scope="module")
def exported(tiny_cosyvoice2_dir, tmp_path_factory):
    from sovits2_jax.convert.cli import convert
    from sovits2_jax.convert.cosyvoice2_export import export_model_dir

    root = tmp_path_factory.mktemp("upstream_loader")
    convert(tiny_cosyvoice2_dir, root / "ours")  # one Orbax checkpoint per part, as training leaves them
    dst = export_model_dir({p: root / "ours" / p for p in ("llm", "flow", "hift")}, root / "CosyVoice2")
    for onnx in ("campplus.onnx", "speech_tokenizer_v2.onnx"):  # the recipe's export copies the data's models
        shutil.copy(tiny_cosyvoice2_dir / onnx, dst / onnx)
    return dst


def test_cosyvoice2s_own_loader_reads_our_export_and_speaks(exported):
    import torch

    from sovits2_jax.parity.torch_refs import import_cosyvoice
    from sovits2_jax.text.tokenizer import get_tokenizer

    assert {"get_tokenizer", "feat_extractor", "allowed_special"} <= {
        line.split(":")[0] for line in (exported / "cosyvoice2.yaml").read_text().splitlines()
    }
    _stand_ins()
    cosy = import_cosyvoice("cosyvoice.cli.cosyvoice").CosyVoice2(str(exported))  # loads flow / hift strictly
    assert cosy.sample_rate == 24000

    ours = get_tokenizer("cosyvoice2")
    for text in ("Hello there, it is 3.14 o'clock.", "你好，世界。<|endofprompt|>[breath] Café naïve"):
        assert cosy.frontend.tokenizer.encode(text) == ours.encode(text)

    t = np.arange(16000) / 16000
    prompt = torch.from_numpy((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))[None]
    tokens = torch.randint(0, 6561, (1, 30), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    chunks = [o["tts_speech"] for o in cosy.token2wav(tokens, torch.tensor([30], dtype=torch.int32), prompt)]
    audio = torch.cat(chunks, dim=1).numpy()
    assert audio.shape == (1, 30 * 2 * 480)  # 2 mel frames per token, 480 samples per frame at 24 kHz
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-4
