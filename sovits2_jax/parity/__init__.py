"""Parity harness: PyTorch reference implementations against our converted models.

``registry`` (components, ``build_case``, ``run``), ``compare`` (tolerances, comparison, report),
``references/`` (one torch reference builder per model family), ``cli`` (backend of ``convert/parity.py``).
"""

from sovits2_jax.parity.compare import (
    BF16_ATOL,
    LAYER_ATOL,
    MODEL_ATOL,
    ParityCase,
    compare_outputs,
    format_report,
)
from sovits2_jax.parity.registry import COMPONENTS, build_case, run

__all__ = [
    "BF16_ATOL",
    "COMPONENTS",
    "LAYER_ATOL",
    "MODEL_ATOL",
    "ParityCase",
    "build_case",
    "compare_outputs",
    "format_report",
    "run",
]
