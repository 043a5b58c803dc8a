"""The package's import graph, read with ``ast`` (module-level and function-level imports alike): no cycles among
sovits2_jax modules, conversion never imports the parity harness, and model definitions stay free of torch,
conversion, parity and data code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "sovits2_jax"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
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
    return {_module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}


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
