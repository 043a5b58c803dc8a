"""HiFT source module and the parity harness components at the tiny size (fast, separate from the real size)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sovits2_jax import parity
from sovits2_jax.parity.references import hift as parity_hift

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity


def test_source_stays_exact_over_ten_seconds():
    """The phase reaches ~1e5 rad after 10 s; our arithmetic reproduces torch's CPU rounding, so no drift."""
    config = parity_hift.reference_config("tiny")
    ref = parity_hift.build_reference(config, seed=1)
    graphdef, params = parity_hift.convert([(k, v.detach().numpy()) for k, v in ref.state_dict().items()], config)
    f0 = parity_hift.random_inputs(config, 500, batch=1, seed=1)["f0"]
    want = parity_hift.torch_source(ref, torch.from_numpy(f0)).numpy()[:, 0]
    got = jax.jit(lambda p, f: nnx.merge(graphdef, p).make_source(f))(params, jnp.asarray(f0))
    assert want.shape == (1, 500 * 480)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_tiny_parity_component_through_the_harness():
    case = parity_hift.build(None, component="hift", size="tiny", frames=24, batch=1)
    ref = case.run_torch(case.inputs)
    ours = case.run_jax(case.inputs)
    report = parity.compare_outputs(ref, ours, case.atol, case.rtol)
    assert set(report) == {"f0_pred", "source", "wav"}
    assert all(o["ok"] for o in report.values()), report
    assert case.inputs["x"].shape == (1, 80, 24) and case.inputs["f0"].shape == (1, 24)


def test_harness_reads_a_checkpoint_directory(tmp_path):
    """``--src``: a model directory with a (tiny) cosyvoice2.yaml and a HiFiGan-style legacy-key hift.pt."""
    (tmp_path / "cosyvoice2.yaml").write_text(parity_hift.hift_yaml(base_channels=32, cond_channels=32))
    ref = parity_hift.build_reference(parity_hift.reference_config("tiny"), seed=5)
    state = {}
    for k, v in ref.state_dict().items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        )
        state[f"generator.{k}"] = v
    torch.save(state, tmp_path / "hift.pt")
    case = parity_hift.build(str(tmp_path), component="hift.decode", frames=16, batch=1)
    report = parity.compare_outputs(case.run_torch(case.inputs), case.run_jax(case.inputs), case.atol, case.rtol)
    assert report["wav"]["ok"] and report["wav"]["ref_max_abs"] > 1e-2, report
