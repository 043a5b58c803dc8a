"""The package's import graph, read with ``ast`` (module-level and function-level imports alike): imports point only
to earlier rows of the package order (docs/architecture.md), configs/ included; no cycles among modules; model
definitions stay free of torch, conversion, parity and data code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "sovits2_jax"
CONFIGS = "configs"

# The package order, leaves first: a module may import from its own unit and from units of earlier rows only
# (units of one row are independent of each other). Kept in step with docs/architecture.md.
ORDER = (
    ("sovits2_jax.validation",),
    ("sovits2_jax.cli", "sovits2_jax.paths"),
    ("sovits2_jax.audio", "sovits2_jax.nn", "sovits2_jax.text", "sovits2_jax.parallel"),
    ("sovits2_jax.models",),
    ("sovits2_jax.data",),
    ("sovits2_jax.convert",),
    ("sovits2_jax.train", "sovits2_jax.infer", "sovits2_jax.data.prep"),
    ("sovits2_jax.configs",),
    ("sovits2_jax.eval",),
    ("sovits2_jax.parity",),
    ("sovits2_jax.demo", "sovits2_jax.bench", "sovits2_jax.cluster", "sovits2_jax.show_config", "sovits2_jax.scripts"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == CONFIGS:  # installed as sovits2_jax.configs (the package's configs/ links to the top-level one)
        parts.insert(0, PACKAGE)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative ``from`` import."""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imported_names(path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module name ``path`` imports anywhere in its body. ``from a import b`` yields ``a.b`` when that is one
    of ``modules``, else ``a`` (``b`` is an attribute)."""
    module = _module_name(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.add(full if full in modules else base)
    return names


def _files() -> dict[str, Path]:
    return {_module_name(p): p for top in (PACKAGE, CONFIGS) for p in (ROOT / top).rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    """sovits2_jax module -> the sovits2_jax modules it imports."""
    files = _files()
    modules = frozenset(files)
    return {m: {n for n in imported_names(p, modules) if n in files and n != m} for m, p in files.items()}


def _all_imports() -> dict[str, set[str]]:
    files = _files()
    return {m: imported_names(p, frozenset(files)) for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offending(importer: str, banned: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} imports {n}"
        for m, names in _all_imports().items()
        if _in(m, importer)
        for n in names
        if any(_in(n, b) for b in banned)
    )


def unit_of(module: str, order=ORDER) -> tuple[int, str] | None:
    """(row, unit) of the most specific package-order unit holding ``module`` (``data.prep`` inside ``data``); None
    for the package's own ``__init__``."""
    found = [(len(unit), row, unit) for row, units in enumerate(order) for unit in units if _in(module, unit)]
    return max(found)[1:] if found else None


def order_violations(order=ORDER) -> list[str]:
    """Every import of a module that points to its own row's other units or to a later row."""
    bad = []
    for module, names in _all_imports().items():
        own = unit_of(module, order)
        for name in sorted(names):
            other = unit_of(name, order)
            if own is None or other is None or other[1] == own[1]:
                continue
            if other[0] >= own[0]:
                bad.append(f"{module} imports {name} ({other[1]} is not below {own[1]})")
    return bad


def test_imports_follow_the_package_order():
    assert order_violations() == []


def test_a_nested_unit_has_its_own_row():
    """Offline preparation (``data.prep``, which runs models read through ``convert``) sits above the online
    pipeline it writes for: the pipeline may not import it."""
    assert unit_of("sovits2_jax.data.prep.text_features") == (6, "sovits2_jax.data.prep")
    assert unit_of("sovits2_jax.data.pipeline") == (4, "sovits2_jax.data")
    assert unit_of("sovits2_jax.data.prep") == (6, "sovits2_jax.data.prep")


def test_every_module_has_a_place_in_the_order():
    assert sorted(m for m in _files() if m != PACKAGE and unit_of(m) is None) == []


def test_the_order_check_catches_a_late_import_inside_a_function(tmp_path, monkeypatch):
    (tmp_path / PACKAGE / "low").mkdir(parents=True)
    (tmp_path / PACKAGE / "high").mkdir()
    (tmp_path / CONFIGS).mkdir()
    for init in (tmp_path / PACKAGE, tmp_path / PACKAGE / "low", tmp_path / PACKAGE / "high", tmp_path / CONFIGS):
        (init / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "low" / "a.py").write_text("def f():\n    from sovits2_jax.high import b\n")
    (tmp_path / PACKAGE / "high" / "b.py").write_text("from sovits2_jax.low import a\n")
    (tmp_path / CONFIGS / "c.py").write_text("import sovits2_jax.high.b\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    order = (("sovits2_jax.low",), ("sovits2_jax.high",), ("sovits2_jax.configs",))
    assert order_violations(order) == ["sovits2_jax.low.a imports sovits2_jax.high.b (sovits2_jax.high is not below "
                                       "sovits2_jax.low)"]  # fmt: skip
    same_row = (("sovits2_jax.low", "sovits2_jax.high"), ("sovits2_jax.configs",))
    assert len(order_violations(same_row)) == 2  # units of one row may not import each other


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / PACKAGE / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from sovits2_jax.sub import b\n    import torch\n")
    (pkg / "b.py").write_text("from .a import f\nfrom .. import sub\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = _graph()
    assert graph["sovits2_jax.sub"] == {"sovits2_jax.sub.a"}
    assert graph["sovits2_jax.sub.a"] == {"sovits2_jax.sub.b"}
    assert graph["sovits2_jax.sub.b"] == {"sovits2_jax.sub.a", "sovits2_jax.sub"}
    assert "torch" in _all_imports()["sovits2_jax.sub.a"]
    assert find_cycle(graph) in (["sovits2_jax.sub.a", "sovits2_jax.sub.b", "sovits2_jax.sub.a"],
                                 ["sovits2_jax.sub", "sovits2_jax.sub.a", "sovits2_jax.sub.b", "sovits2_jax.sub"])
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) is None
    assert find_cycle({"x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]


def test_no_import_cycles():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_convert_never_imports_parity():
    assert _offending("sovits2_jax.convert", ("sovits2_jax.parity",)) == []


@pytest.mark.parametrize("banned", ["torch", "sovits2_jax.convert", "sovits2_jax.parity", "sovits2_jax.data"])
def test_models_import_no_torch_conversion_parity_or_data(banned):
    assert _offending("sovits2_jax.models", (banned,)) == []
