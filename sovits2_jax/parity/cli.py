"""Backend of ``python -m sovits2_jax.parity`` and ``convert/parity.py``: our converted model against the
PyTorch reference, one component."""

from __future__ import annotations

import argparse
import logging
import sys

from sovits2_jax.convert.mapping import ConversionError
from sovits2_jax.parity.compare import format_report
from sovits2_jax.parity.registry import COMPONENTS, run

# The component compared when only --src is given, by the checkpoint's detected format.
DEFAULT_COMPONENT = {"hf_qwen2": "qwen2", "cosyvoice2": "llm", "gpt_sovits": "vits"}


def main(argv=None) -> int:
    """Exit status: 0 when every output is within tolerance, 1 on a mismatch, 2 on an error."""
    p = argparse.ArgumentParser(description="Compare our converted model with the PyTorch reference")
    p.add_argument("--src", default=None, help="PyTorch checkpoint (default: a random-init reference)")
    p.add_argument("--component", default=None, choices=sorted(COMPONENTS))
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

                name = detect_torch_format(args.src).NAME
                if name not in DEFAULT_COMPONENT:
                    raise ConversionError(f"{args.src}: no default component for a {name!r} source; give --component")
                component = DEFAULT_COMPONENT[name]
        if args.device == "gpu":
            import jax

            if not any(d.platform == "gpu" for d in jax.devices()):
                raise ConversionError("--device gpu: no CUDA device visible to JAX")
        report = run(
            component,
            args.src,
            device=args.device,
            dtype=args.dtype,
            seed=args.seed,
            dump=args.dump,
            report_path=args.report,
        )
    except (ConversionError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"report: {args.report}")
    return 0 if report["ok"] else 1
