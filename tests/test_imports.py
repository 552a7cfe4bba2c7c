"""The package's import graph, read with `ast` from the source (nothing is imported): no module imports,
directly or through others, a module that imports it back, counting imports inside functions too.

A package's __init__ counts as a module; that importing `a.b` first runs `a/__init__.py` does not count
(every submodule of a package that imports its submodules would otherwise be in a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.models import ROOT

PACKAGE = ROOT / "distilbert"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, wherever in the file the import statement is."""
    known = modules()

    def module_of(name: str) -> str | None:
        while name and name not in known:  # `from distilbert.x import f`: f is a name in module distilbert.x
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, package) in known.items():
        here = name if package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {module_of(a.name) for a in node.names if a.name.split(".")[0] == "distilbert"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                    source = f"{base}.{node.module}" if node.module else base
                elif (node.module or "").split(".")[0] == "distilbert":
                    source = node.module
                else:
                    continue
                # `from . import tei` imports the module tei; `from .core import Server` the module core
                targets |= {f"{source}.{a.name}" if f"{source}.{a.name}" in known else module_of(source)
                            for a in node.names}
        graph[name] = targets - {None, name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring the modules on the current path)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "distilbert.serve.core" in graph["distilbert.serve.tei"]  # from .core import ...
    assert "distilbert.serve.tei" in graph["distilbert.serve.app"]  # from . import hf, openai, tei
    assert "distilbert.pipelines" in graph["distilbert.serve.core"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_route_families_import_only_the_core():
    """The server's routes (one module per API family) import the core and the request schemas, never the
    app that includes them nor each other."""
    graph = import_graph()
    allowed = {"distilbert.serve.core", "distilbert.serve.schemas", "distilbert.serve.metrics"}
    for family in ("tei", "openai", "hf"):
        imported = {m for m in graph[f"distilbert.serve.{family}"] if m.startswith("distilbert.serve")}
        assert imported <= allowed, (family, imported - allowed)
