"""The console scripts of pyproject.toml: each is a function of sovits2_jax.scripts that runs an existing
``python -m`` module, and an installed one behaves as that module (flags, output, exit status)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from sovits2_jax import scripts

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml (read as text: tomllib is not in Python 3.10)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', section, re.M))


def test_every_console_script_runs_a_python_m_module():
    declared = _declared()
    assert sorted(declared) == sorted(scripts.COMMANDS)
    for name, target in declared.items():
        module, _, function = target.partition(":")
        assert module == "sovits2_jax.scripts" and callable(getattr(scripts, function)), name
        runnable = scripts.COMMANDS[name]
        spec = importlib.util.find_spec(runnable)
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            spec = importlib.util.find_spec(f"{runnable}.__main__")
        assert spec is not None and "__main__" in Path(spec.origin).read_text(), name


def test_an_installed_console_script_is_its_module(tmp_path):
    script = Path(sys.executable).parent / "sovits2-show-config"
    assert script.is_file(), "console scripts missing: reinstall with `pip install -e .` (launch/setup_venv.sh)"
    args = ["--config=configs/qwen2.py:tiny", "--config.model.num_layers=3"]
    ours = subprocess.run([str(script), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    module = subprocess.run([sys.executable, "-m", "sovits2_jax.show_config", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert ours.returncode == module.returncode == 0 and '"num_layers": 3' in ours.stdout
    assert ours.stdout == module.stdout
    bad = subprocess.run([str(script), "--config=configs/qwen2.py:tiny", "--config.train.lr=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: unknown config key --config.train.lr; did you mean --config.train.optimizer.lr?"
    ]
