"""Every parity component on CUDA against the PyTorch reference on CUDA (TF32 off on both sides).

fp32 is asserted at the parity tolerances of docs/architecture.md (the harness's own verdict); bf16 is reported where
the component's case has a bf16 path (``registry.dtypes``; not the flow's), and only gross errors fail.
Skipped without a GPU (conftest).
"""

import json

import pytest

from sovits2_jax import parity
from sovits2_jax.parity.registry import COMPONENTS, dtypes

pytestmark = [pytest.mark.gpu, pytest.mark.parity]


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_fp32_on_gpu(component, torch_available, tmp_path):
    report = parity.run(component, None, device="gpu", dtype="float32", report_path=tmp_path / "report.json")
    print(component, json.dumps({k: v for k, v in report.items() if k != "outputs"}))
    assert report["ok"], parity.format_report(report)


@pytest.mark.parametrize("component", [c for c in sorted(COMPONENTS) if "bfloat16" in dtypes(c)])
def test_bf16_on_gpu_is_reported(component, torch_available, tmp_path):
    report = parity.run(component, None, device="gpu", dtype="bfloat16", report_path=tmp_path / "report.json")
    print(parity.format_report(report))
    for key, out in report["outputs"].items():
        assert "max_abs" in out, f"{key}: shape mismatch"
        # bf16 keeps ~3 significant digits: a quarter of the output's range is a broken model, not rounding
        assert out["max_abs"] <= 0.25 * max(1.0, out["ref_max_abs"]), (key, out)
