"""The parity CLI's verdict: exit 1 with the output marked failed in report.json when one converted weight is off,
exit 0 on the same run without the plant."""

import json

import pytest

from sovits2_jax.convert import hf_qwen2
from sovits2_jax.parity import cli
from sovits2_jax.parity.random_reference import save_random_hf_qwen2
from sovits2_jax.parity.references import qwen2 as parity_qwen2

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    pytest.importorskip("torch")
    return save_random_hf_qwen2(tmp_path_factory.mktemp("qwen2") / "hf", parity_qwen2.TINY, seed=2)


def _run(src, report):
    return cli.main(["--component", "qwen2", "--src", str(src), "--report", str(report)])


def test_exit_0_when_the_conversion_is_right(src, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert _run(src, report) == 0
    result = json.loads(report.read_text())
    assert result["ok"] and all(o["ok"] for o in result["outputs"].values())
    assert "PASS" in capsys.readouterr().out


def test_exit_1_on_a_planted_mismatch(src, tmp_path, monkeypatch, capsys):
    load = hf_qwen2.load_hf_params

    def planted(path, config):
        flat = load(path, config)
        (key,) = [k for k in flat if k.startswith("lm_head")]
        flat[key] = flat[key] + 1e-2
        return flat

    monkeypatch.setattr(hf_qwen2, "load_hf_params", planted)
    report = tmp_path / "report.json"
    assert _run(src, report) == 1
    result = json.loads(report.read_text())
    assert not result["ok"] and result["asserted"]
    assert result["outputs"]["logits"]["ok"] is False
    assert result["outputs"]["logits"]["max_abs"] > result["atol"]
    # the plant is in the output head only: the hidden states before it still agree
    assert result["outputs"]["last_hidden"]["ok"] is True
    assert "FAIL" in capsys.readouterr().out


def test_declared_dtypes_are_the_ones_a_case_accepts():
    """``registry.dtypes`` (what the GPU suite loops over) never lists a dtype the component's case refuses, and
    every component runs in float32."""
    from sovits2_jax.parity.registry import COMPONENTS, build_case, dtypes

    for component in COMPONENTS:
        assert dtypes(component)[0] == "float32", component
        if "bfloat16" not in dtypes(component):
            with pytest.raises(ValueError, match="float32 only"):
                build_case(component, dtype="bfloat16")
    assert dtypes("flow") == ("float32",) and "bfloat16" in dtypes("qwen2")
