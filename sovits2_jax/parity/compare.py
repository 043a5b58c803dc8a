"""Comparison of the reference's and our outputs, and the parity report.

Tolerances (docs/architecture.md): fp32 on CPU atol 1e-5 for simple layers and 1e-4 for whole models (relative where
magnitudes vary); bf16 results are reported, not asserted tighter than bf16 allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

LAYER_ATOL = 1e-5  # fp32, simple layers
MODEL_ATOL = 1e-4  # fp32, whole models
BF16_ATOL = 5e-2  # bf16: reported only


@dataclasses.dataclass
class ParityCase:
    """Inputs (torch layout, the reference forward's argument names), both forwards, and the tolerance."""

    inputs: dict[str, np.ndarray]
    run_torch: Callable[[dict], dict[str, np.ndarray]]
    run_jax: Callable[[dict], dict[str, np.ndarray]]
    atol: float
    rtol: float | None = None
    info: dict = dataclasses.field(default_factory=dict)


def compare_outputs(
    ref: dict[str, np.ndarray], ours: dict[str, np.ndarray], atol: float, rtol: float | None
) -> dict[str, dict]:
    """Per output: shape, max abs and max relative error, and whether |ours-ref| <= atol (+ rtol*|ref|)."""
    if set(ref) != set(ours):
        raise ValueError(f"output keys differ: reference {sorted(ref)}, ours {sorted(ours)}")
    report = {}
    for key in ref:
        a = np.asarray(ref[key], np.float64)
        b = np.asarray(ours[key], np.float64)
        if a.shape != b.shape:
            report[key] = dict(shape_ref=list(a.shape), shape_ours=list(b.shape), ok=False)
            continue
        diff = np.abs(a - b)
        scale = np.abs(a)
        bound = atol + (rtol or 0.0) * scale
        finite = bool(np.isfinite(b).all() == np.isfinite(a).all())
        report[key] = dict(
            shape=list(a.shape),
            max_abs=float(diff.max(initial=0.0)),
            max_rel=float((diff / np.maximum(scale, 1e-12)).max(initial=0.0)),
            ref_max_abs=float(scale.max(initial=0.0)),
            ok=bool(finite and (diff <= bound).all()),
        )
    return report


def case_report(case: ParityCase, ref: dict, ours: dict, *, dtype: str, **meta) -> dict:
    """The report of one run: ``meta`` (component, src, device, seed), tolerance, per-output results, verdict.

    Asserted in float32 only; a bf16 run is compared at ``BF16_ATOL`` at least and always reported ok.
    """
    asserted = dtype == "float32"
    atol = case.atol if asserted else max(case.atol, BF16_ATOL)
    outputs = compare_outputs(ref, ours, atol, case.rtol)
    ok = all(o["ok"] for o in outputs.values()) or not asserted
    verdict = dict(atol=atol, rtol=case.rtol, asserted=asserted, outputs=outputs, info=case.info, ok=ok)
    return meta | dict(dtype=dtype) | verdict


def format_report(report: dict) -> str:
    """The report as the CLI prints it: one line per output and the verdict."""
    lines = [f"parity {report['component']} ({report['device']}, {report['dtype']}, seed {report['seed']})"]
    for key, o in report["outputs"].items():
        if "max_abs" in o:
            lines.append(
                f"  {key:<16} shape {o['shape']}  max abs {o['max_abs']:.3e}  max rel {o['max_rel']:.3e}  "
                f"(|ref| <= {o['ref_max_abs']:.3g})  {'ok' if o['ok'] else 'FAIL'}"
            )
        else:
            lines.append(
                f"  {key:<16} shape mismatch: reference {o['shape_ref']} ours {o['shape_ours']}  FAIL"
            )
    tol = f"atol {report['atol']:g}" + (f", rtol {report['rtol']:g}" if report["rtol"] else "")
    verdict = "PASS" if report["ok"] else "FAIL"
    if not report["asserted"]:
        verdict = "reported (bf16, not asserted)"
    lines.append(f"  tolerance {tol}: {verdict}")
    return "\n".join(lines)
