"""bunny's import structure, read from its source: no cycle, nothing importing upward.

bunny imports neither relay nor the lab; bunny.dns imports nothing of bunny but its error
tree and its retry policy; and the modules, each an arrow to what it imports, form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bunny

PACKAGE = Path(bunny.__file__).resolve().parent
# What bunny.dns may import from the rest of bunny: the layers below it.
BELOW_DNS = {"bunny.errors", "bunny.retry"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each bunny module and the modules it imports (any import, TYPE_CHECKING ones too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[_module_name(path)] = imported
    modules = set(graph)
    return {
        name: {i for i in imported if i in modules}
        | {i for i in imported if i.split(".")[0] in ("relay", "lab")}
        for name, imported in graph.items()
    }


def test_bunny_never_imports_relay_or_the_lab() -> None:
    offenders = {
        name: sorted(i for i in imported if i.split(".")[0] in ("relay", "lab"))
        for name, imported in _imports().items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_bunny_dns_imports_nothing_above_it() -> None:
    upward = {
        name: sorted(i for i in imported if not i.startswith("bunny.dns") and i not in BELOW_DNS)
        for name, imported in _imports().items()
        if name.startswith("bunny.dns")
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_the_modules_form_no_cycle() -> None:
    graph = {
        name: {i for i in imported if i.startswith("bunny") and i != name}
        for name, imported in _imports().items()
    }
    # A package imports its own modules only by name, never the other way round.
    graph = {
        name: {i for i in imported if not name.startswith(i + ".")}
        for name, imported in graph.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
