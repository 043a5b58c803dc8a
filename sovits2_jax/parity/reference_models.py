"""Random-init ONNX models with the real CosyVoice2 signatures, for tests and benchmarks (needs torch).

* ``export_s3_tokenizer``: s3tokenizer's S3TokenizerV2 (or V1) exported with torch.onnx, inputs ``feats``
  [B, 128, T] float32 and ``feats_length`` [B] int32 like speech_tokenizer_v2.onnx; ``small=True`` shrinks the
  encoder (same graph structure) so tests stay fast.
* ``export_campplus_like``: a small conv + statistics-pooling network with campplus.onnx's signature
  (``input`` [B, T, 80] -> ``output`` [B, 192]).
"""

from __future__ import annotations

import os


def _torch_export(module, args, path: str, input_names, output_names, dynamic_axes) -> str:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with torch.no_grad():
        torch.onnx.export(
            module, args, tmp, input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            opset_version=17, dynamo=False,
        )  # fmt: skip
    os.replace(tmp, path)
    return path


def export_s3_tokenizer(path: str, *, version: str = "v2", small: bool = True, seed: int = 0) -> str:
    import torch

    from sovits2_jax.parity.torch_refs import stub_torchaudio

    stub_torchaudio()
    import s3tokenizer.model as s3v1
    import s3tokenizer.model_v2 as s3v2

    torch.manual_seed(seed)
    if version == "v2":
        config = s3v2.ModelConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2) if small else s3v2.ModelConfig()
        model = s3v2.S3TokenizerV2("speech_tokenizer_v2_25hz", config)
    elif version == "v1":
        config = s3v1.ModelConfig(n_audio_state=128, n_audio_head=2, n_audio_layer=2) if small else s3v1.ModelConfig()
        model = s3v1.S3Tokenizer("speech_tokenizer_v1", config)
    else:
        raise ValueError(f"s3 tokenizer version must be v1 or v2, got {version!r}")
    model.eval()
    tokenize = _ExportableTokenizer(model, rotary=version == "v2")
    feats = torch.randn(2, 128, 200)
    lengths = torch.tensor([200, 150], dtype=torch.int32)
    original = s3v2.apply_rotary_emb
    s3v2.apply_rotary_emb = _real_rotary  # the tracer cannot export complex constants
    try:
        return _torch_export(
            tokenize, (feats, lengths), path, ["feats", "feats_length"], ["indices"],
            {"feats": {0: "batch", 2: "frames"}, "feats_length": {0: "batch"}, "indices": {0: "batch", 1: "tokens"}},
        )  # fmt: skip
    finally:
        s3v2.apply_rotary_emb = original


def _real_rotary(xq, xk, freqs_cis):
    """s3tokenizer's rotary embedding with the table given as real [T, D, 2] (cos, sin) instead of complex."""
    import torch

    cos = freqs_cis[:, :, 0].unsqueeze(0).unsqueeze(2).to(xq.dtype)
    sin = freqs_cis[:, :, 1].unsqueeze(0).unsqueeze(2).to(xq.dtype)
    half = xq.shape[-1] // 2
    xq_r = torch.cat((-xq[..., half:], xq[..., :half]), dim=-1)
    xk_r = torch.cat((-xk[..., half:], xk[..., :half]), dim=-1)
    return xq * cos + xq_r * sin, xk * cos + xk_r * sin


def _ExportableTokenizer(model, *, rotary: bool):
    """The encoder + quantizer forward of S3Tokenizer / S3TokenizerV2 with traceable padding masks.

    The reference derives mask widths with ``.item()``, which tracing would freeze to the example's length.
    """
    import torch
    import torch.nn.functional as F
    from s3tokenizer.utils import mask_to_bias

    def valid(lengths, width):
        return (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1)

    class Tokenize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            if rotary:
                self.register_buffer("rope", torch.view_as_real(model.encoder.freqs_cis).contiguous())

        def forward(self, feats, feats_length):
            enc = self.model.encoder
            width = feats.shape[-1]
            x = F.gelu(enc.conv1(feats * valid(feats_length, width)))
            lengths = (feats_length - 1) // enc.stride + 1
            width = (width - 1) // enc.stride + 1
            x = F.gelu(enc.conv2(x * valid(lengths, width)))
            lengths = (lengths - 1) // 2 + 1
            width = (width - 1) // 2 + 1
            mask = valid(lengths, width)
            x = x.permute(0, 2, 1)
            bias = mask_to_bias(mask, x.dtype).unsqueeze(1)
            if rotary:
                for block in enc.blocks:
                    x = block(x, bias, mask.transpose(1, 2), self.rope[: x.shape[1]])
            else:
                x = x + enc.positional_embedding[: x.shape[1], :]
                for block in enc.blocks:
                    x = block(x, bias)
            return self.model.quantizer.encode(x)

    return Tokenize().eval()


def export_campplus_like(path: str, *, dim: int = 192, seed: int = 0) -> str:
    import torch

    torch.manual_seed(seed)

    class CampplusLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.Sequential(
                torch.nn.Conv1d(80, 64, 5, padding=2), torch.nn.ReLU(),
                torch.nn.Conv1d(64, 64, 3, padding=2, dilation=2), torch.nn.ReLU(),
            )  # fmt: skip
            self.proj = torch.nn.Linear(128, dim)

        def forward(self, x):  # [B, T, 80]
            h = self.convs(x.transpose(1, 2))
            stats = torch.cat([h.mean(2), h.std(2)], dim=1)
            return self.proj(stats)

    return _torch_export(
        CampplusLike().eval(), (torch.randn(1, 120, 80),), path, ["input"], ["output"],
        {"input": {0: "batch", 1: "frames"}, "output": {0: "batch"}},
    )  # fmt: skip
