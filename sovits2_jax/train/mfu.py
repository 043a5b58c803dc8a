"""Model FLOPs utilisation: the compiled step's FLOPs (XLA cost analysis) over the devices' peak FLOP/s.

Peaks are dense bf16 tensor-core FLOP/s per chip from the vendors' data sheets; the compute dtype matters less
than one would like here (fp32 matmuls on GPUs run on TF32 units at about half that), so MFU is reported against
the bf16 peak, as MaxText and levanter do. CPUs have no such number: ``CPU_NOMINAL`` (1 TFLOP/s per process) is a
stated placeholder so the metric exists; CPU MFU values are not comparable to accelerator ones.
"""

from __future__ import annotations

import logging

import jax

PEAK_FLOPS = {  # device_kind substring (lower case) -> peak FLOP/s per device
    "h200": 989e12,
    "h100": 989e12,
    "a100": 312e12,
    "l40s": 362e12,
    "a10g": 125e12,
    "l4": 121e12,
    "v100": 125e12,
    "tpu v6": 918e12,
    "tpu v5p": 459e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v4": 275e12,
}
CPU_NOMINAL = 1e12

log = logging.getLogger(__name__)


def peak_flops(device: jax.Device | None = None, override: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from)."""
    if override > 0:
        return override, "config.train.peak_flops"
    device = device or jax.devices()[0]
    kind = device.device_kind.lower()
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops, f"table ({device.device_kind})"
    if device.platform == "cpu":
        return CPU_NOMINAL, "nominal CPU value (1 TFLOP/s; not comparable to accelerators)"
    log.warning("no peak FLOP/s known for device kind %r; MFU uses the nominal %.0e", device.device_kind, CPU_NOMINAL)
    return CPU_NOMINAL, f"nominal (unknown device kind {device.device_kind})"


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled (``jit(...).lower(...).compile()``) function, 0 when XLA does not say."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return 0.0
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def mfu(flops_per_device: float, step_seconds: float, peak: float) -> float:
    """Achieved over peak FLOP/s of one device (the cost analysis of a partitioned program is one device's)."""
    if step_seconds <= 0 or peak <= 0:
        return 0.0
    return flops_per_device / step_seconds / peak
