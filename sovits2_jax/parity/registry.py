"""The parity components: each maps to a reference module whose ``build(src, *, component, device, dtype, seed)``
returns a ``ParityCase``. ``run`` builds one, runs both sides, compares, and writes ``report.json`` and optional
dumps (inputs.npz, torch.npz, jax.npz, all in torch layout with the reference forward's argument names).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
from pathlib import Path

import numpy as np

from sovits2_jax.parity.compare import ParityCase, case_report

_REFERENCES = "sovits2_jax.parity.references"


def components() -> dict[str, str]:
    """component -> reference module, from the ``COMPONENTS`` each module of parity/references/ declares."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(importlib.import_module(_REFERENCES).__path__):
        module = f"{_REFERENCES}.{info.name}"
        for name in _declared(module):
            if name in found:
                raise ValueError(f"parity component {name!r} is declared by both {found[name]} and {module}")
            found[name] = module
    return found


def _declared(module: str) -> tuple[str, ...]:
    """The module's COMPONENTS, read without importing it (a reference imports torch and its package)."""
    import ast

    path = importlib.util.find_spec(module).origin
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPONENTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


COMPONENTS = components()


def dtypes(component: str) -> tuple[str, ...]:
    """The dtypes ``component``'s parity case can run in (its reference module's ``DTYPES``; default fp32 and bf16)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown parity component {component!r}; known: {', '.join(sorted(COMPONENTS))}")
    return tuple(getattr(importlib.import_module(COMPONENTS[component]), "DTYPES", ("float32", "bfloat16")))


def build_case(
    component: str, src: str | None = None, *, device="cpu", dtype="float32", seed=0
) -> ParityCase:
    """The ``ParityCase`` of ``component`` (reference from ``src``, or a random-init one when None)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown parity component {component!r}; known: {', '.join(sorted(COMPONENTS))}")
    module = importlib.import_module(COMPONENTS[component])
    return module.build(src, component=component, device=device, dtype=dtype, seed=seed)


def run(
    component: str,
    src: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    dump: str | Path | None = None,
    report_path: str | Path | None = "report.json",
) -> dict:
    """Builds the case, runs both sides, compares; returns the report (``report["ok"]`` is the verdict)."""
    import jax

    # fp32 on a GPU: full-precision matmuls (XLA would otherwise use TF32 on Ampere and later)
    precision = "highest" if dtype == "float32" else "default"
    with jax.default_matmul_precision(precision):
        case = build_case(component, src, device=device, dtype=dtype, seed=seed)
        ref = {k: np.asarray(v) for k, v in case.run_torch(case.inputs).items()}
        ours = {k: np.asarray(v) for k, v in case.run_jax(case.inputs).items()}
    report = case_report(case, ref, ours, dtype=dtype, component=component, src=src, device=device, seed=seed)
    if dump is not None:
        dump = Path(dump)
        dump.mkdir(parents=True, exist_ok=True)
        np.savez(dump / "inputs.npz", **case.inputs)
        np.savez(dump / "torch.npz", **ref)
        np.savez(dump / "jax.npz", **ours)
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2))
    return report
