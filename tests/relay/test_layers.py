"""relay's modules import downwards only: no cycle, nothing above the layer it sits in.

The layers, bottom first, are drawn in docs/relay-layout.md; this test is that drawing's
proof. A module may import modules of a lower layer, and of its own layer when the
layer's order below says so (a module is listed after what it imports). relay never
imports bunny, the lab or the tests, and no module of its own grows past 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

RELAY = Path(__file__).resolve().parents[2] / "relay"

LAYERS: tuple[tuple[str, ...], ...] = (
    # What everything else speaks: errors, and what a job kind is.
    ("relay", "relay.errors", "relay.kinds", "relay.kinds.handler", "relay.stores"),
    # Parts that know nothing of one another.
    (
        "relay.admission",
        "relay.callcontext",
        "relay.checks",
        "relay.listening",
        "relay.decoding",
        "relay.reflection",
        "relay.tls",
        "relay.kinds.typed",
        "relay.kinds.echo",
        "relay.kinds.fail",
        "relay.kinds.sha256",
        "relay.kinds.sleep",
        "relay.kinds.wordcount",
        "relay.kinds.registry",
        "relay.stores.base",
        "relay.stores.timing",
        "relay.stores.groupcommit",
        "relay.stores.sqlite_file",
        "relay.stores.memory",
        "relay.stores.sqlite",
        "relay.stores.redis",
        "relay.stores.spec",
    ),
    # One job: from its request to its result.
    ("relay.config", "relay.runner"),
    # Calls: the servicer, its streams and the telemetry around them.
    ("relay.streams", "relay.keptjobs", "relay.tracing", "relay.gauges", "relay.service"),
    # One relay process.
    ("relay.lifecycle", "relay.server", "relay.cli", "relay.__main__"),
)

RANK = {
    name: (layer, index) for layer, names in enumerate(LAYERS) for index, name in enumerate(names)
}


def _module(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # "from relay.kinds import echo" imports the module relay.kinds.echo.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module(path): path for path in sorted(RELAY.rglob("*.py"))}


def test_every_module_has_a_place_in_the_layers() -> None:
    assert sorted(set(MODULES) - set(RANK)) == []
    assert sorted(set(RANK) - set(MODULES)) == []


def test_imports_point_down_and_never_outside_the_shipped_packages() -> None:
    wrong = []
    for name, path in MODULES.items():
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top in ("bunny", "lab", "tests"):
                wrong.append(f"{name} imports {imported}")
            elif imported in MODULES and imported != name and RANK[imported] > RANK[name]:
                wrong.append(f"{name} imports {imported}, which sits above it")
    assert wrong == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        name: lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text().splitlines())) > 500
    }
    assert long == {}
