"""Reader for HyperPyYAML files (CosyVoice's ``cosyvoice2.yaml``) into plain Python data, importing nothing.

Nothing is instantiated or called; tagged nodes become plain dicts:

- ``!new:pkg.Class`` -> ``{"__class__": "pkg.Class", **kwargs}``; a sequence body becomes ``"__args__": [...]``,
  a scalar body ``"__args__": [value]``, an empty body no arguments.
- ``!name:pkg.fn`` (a partial) -> ``{"__name__": "pkg.fn", **kwargs}`` (same body rules).
- ``!apply:pkg.fn`` (called at load time by hyperpyyaml) -> ``{"__apply__": "pkg.fn", "__args__": [...]}``.
- ``!ref <key>`` -> the referenced value itself (the same dict object for a referenced ``!new:`` node, as
  hyperpyyaml shares the instance); ``<a.b>`` / ``<a[b]>`` reach into nested keys. A reference inside a longer
  expression is substituted as text and the result is evaluated if it is plain arithmetic
  (``!ref <a> * <b>`` -> a number), otherwise kept as a string (``!ref <dir>/x.pt`` -> ``"d/x.pt"``).
- ``!copy <key>`` -> a deep copy of the referenced value; ``!tuple (1, 2)`` -> a tuple.
- ``!PLACEHOLDER`` must be replaced through ``overrides``.

Scalars follow YAML 1.2 for floats (``1e-5`` is a float, as in ruamel.yaml which hyperpyyaml uses).
"""

from __future__ import annotations

import ast
import copy
import operator
import os
import re
from typing import Any

import yaml

_REF_RE = re.compile(r"<([^<>]+)>")
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class HyperYamlError(ValueError):
    """A HyperPyYAML file could not be read or resolved."""


class _Tagged:
    def __init__(self, kind: str, target: str, body: Any):
        self.kind, self.target, self.body = kind, target, body


class _Ref:
    def __init__(self, expr: str, deep_copy: bool):
        self.expr, self.deep_copy = expr, deep_copy


class _Placeholder:
    pass


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.1 (PyYAML) needs a dot in floats; YAML 1.2 does not.
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _body(loader: yaml.Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    return None if value == "" else yaml.load(value, Loader=_Loader) if isinstance(value, str) else value


def _multi(kind: str):
    def construct(loader, suffix, node):
        if not suffix:
            raise HyperYamlError(f"!{kind}: needs a dotted path (line {node.start_mark.line + 1})")
        return _Tagged(kind, suffix, _body(loader, node))

    return construct


for _kind in ("new", "name", "apply"):
    _Loader.add_multi_constructor(f"!{_kind}:", _multi(_kind))
_Loader.add_constructor("!ref", lambda loader, node: _Ref(str(loader.construct_scalar(node)), False))
_Loader.add_constructor("!copy", lambda loader, node: _Ref(str(loader.construct_scalar(node)), True))
_Loader.add_constructor("!PLACEHOLDER", lambda loader, node: _Placeholder())
_Loader.add_constructor(
    "!tuple", lambda loader, node: ("__tuple__", str(loader.construct_scalar(node)).strip().strip("()"))
)


def _unsupported(loader, suffix, node):
    raise HyperYamlError(f"unsupported HyperPyYAML tag !{suffix} (line {node.start_mark.line + 1})")


_Loader.add_multi_constructor("!", _unsupported)

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _arith(node: ast.AST):
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError("not arithmetic")


def _evaluate(text: str):
    """Plain arithmetic on numbers is computed; anything else stays the string it is."""
    try:
        return _arith(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError):
        return text


def _split_path(path: str) -> list[str]:
    parts = []
    for piece in path.strip().split("."):
        head, *rest = piece.split("[")
        if head:
            parts.append(head)
        parts.extend(r.rstrip("]").strip("'\"") for r in rest)
    return parts


class _Resolver:
    def __init__(self, tree: dict):
        self.tree = tree
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def lookup(self, path: str) -> Any:
        node: Any = self.tree
        for key in _split_path(path):
            if isinstance(node, _Tagged):
                node = node.body
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise HyperYamlError(f"!ref <{path}>: no key {key!r}")
        return self.resolve(node)

    def reference(self, ref: _Ref) -> Any:
        matches = _REF_RE.findall(ref.expr)
        if not matches:
            raise HyperYamlError(f"!ref {ref.expr!r}: no <key> in the reference")
        if ref.expr.strip() == f"<{matches[0]}>":
            value = self.lookup(matches[0])
            return copy.deepcopy(value) if ref.deep_copy else value
        text = _REF_RE.sub(lambda m: str(self.lookup(m.group(1))), ref.expr)
        return _evaluate(text)

    def resolve(self, node: Any) -> Any:
        key = id(node)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise HyperYamlError("circular !ref")
        self.active.add(key)
        try:
            out = self._resolve(node)
        finally:
            self.active.discard(key)
        if isinstance(node, (_Tagged, _Ref, dict, list)):
            self.done[key] = out
        return out

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, _Ref):
            return self.reference(node)
        if isinstance(node, _Placeholder):
            raise HyperYamlError("a !PLACEHOLDER value was not given through overrides")
        if isinstance(node, tuple) and len(node) == 2 and node[0] == "__tuple__":
            return tuple(_evaluate(x) if x.strip() else None for x in node[1].split(",") if x.strip())
        if isinstance(node, _Tagged):
            out: dict[str, Any] = {f"__{'class' if node.kind == 'new' else node.kind}__": node.target}
            body = self.resolve(node.body)
            if isinstance(body, dict):
                out.update(body)
            elif isinstance(body, list):
                out["__args__"] = body
            elif body is not None:
                out["__args__"] = [body]
            return out
        if isinstance(node, dict):
            return {k: self.resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        return node


def load_hyperpyyaml(
    source: str | os.PathLike, overrides: dict[str, Any] | None = None, *, overrides_must_match: bool = False
) -> dict[str, Any]:
    """Parses a HyperPyYAML file (path) or text into plain data; ``overrides`` replace top-level keys first."""
    text = source
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"HyperPyYAML file not found: {source}")
        with open(source, encoding="utf-8") as f:
            text = f.read()
    try:
        tree = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise HyperYamlError(f"invalid YAML: {e}") from e
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise HyperYamlError(f"top level must be a mapping, got {type(tree).__name__}")
    for key, value in (overrides or {}).items():
        if overrides_must_match and key not in tree:
            raise HyperYamlError(f"override {key!r} does not match any top-level key")
        tree[key] = value
    resolver = _Resolver(tree)
    return {k: resolver.resolve(v) for k, v in tree.items()}
