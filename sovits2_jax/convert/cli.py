"""Implementations of the thin conversion CLIs ``convert/torch_to_jax.py`` and ``convert/jax_to_torch.py``
(``convert/parity.py`` is backed by ``sovits2_jax.parity.cli``)."""

from __future__ import annotations

import argparse
import sys

from sovits2_jax.convert.mapping import ConversionError


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _convert_main(argv, description: str, src_help: str, dst_help: str, pick_format, direction: str) -> int:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--src", required=True, help=src_help)
    p.add_argument("--dst", required=True, help=dst_help)
    args = p.parse_args(argv)
    try:
        fmt = pick_format(args.src)
        getattr(fmt, direction)(args.src, args.dst)
    except (ConversionError, OSError) as e:
        return _fail(e)
    print(f"{args.src} -> {args.dst} ({fmt.NAME}, {direction})")
    return 0


def torch_to_jax_main(argv=None) -> int:
    from sovits2_jax.convert.formats import detect_torch_format

    return _convert_main(
        argv,
        "Convert a PyTorch checkpoint (HF Qwen2 dir, CosyVoice2 dir, GPT-SoVITS .pth) to an Orbax checkpoint",
        "PyTorch checkpoint file or directory",
        "output Orbax checkpoint directory",
        detect_torch_format,
        "torch_to_jax",
    )


def jax_to_torch_main(argv=None) -> int:
    from sovits2_jax.convert.formats import format_of_checkpoint

    return _convert_main(
        argv,
        "Write an Orbax checkpoint of ours back in its PyTorch format",
        "Orbax checkpoint directory written by torch_to_jax",
        "output PyTorch file or directory",
        format_of_checkpoint,
        "jax_to_torch",
    )
