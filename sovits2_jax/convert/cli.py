"""Implementations of the thin CLIs in ``convert/`` (torch_to_jax, jax_to_torch, parity)."""

from __future__ import annotations

import argparse
import logging
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


DEFAULT_COMPONENT = {"hf_qwen2": "qwen2", "cosyvoice2": "llm", "gpt_sovits": "vits"}


def parity_main(argv=None) -> int:
    from sovits2_jax.convert import parity

    p = argparse.ArgumentParser(description="Compare our converted model with the PyTorch reference")
    p.add_argument("--src", default=None, help="PyTorch checkpoint (default: a random-init reference)")
    p.add_argument("--component", default=None, choices=sorted(parity.COMPONENTS))
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dump", default=None, help="directory for inputs.npz, torch.npz, jax.npz")
    p.add_argument("--report", default="report.json", help="where to write the JSON report")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    component = args.component
    try:
        if component is None:
            if args.src is None:
                component = "qwen2"
            else:
                from sovits2_jax.convert.formats import detect_torch_format

                component = DEFAULT_COMPONENT[detect_torch_format(args.src).NAME]
        if args.device == "gpu":
            import jax

            if not any(d.platform == "gpu" for d in jax.devices()):
                raise ConversionError("--device gpu: no CUDA device visible to JAX")
        report = parity.run(
            component,
            args.src,
            device=args.device,
            dtype=args.dtype,
            seed=args.seed,
            dump=args.dump,
            report_path=args.report,
        )
    except (ConversionError, OSError, ValueError) as e:
        return _fail(e)
    print(parity.format_report(report))
    print(f"report: {args.report}")
    return 0 if report["ok"] else 1
