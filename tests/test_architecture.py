"""The architecture, enforced: imports point downward only and no module imports itself back.

The import graph is read from the sources (an AST walk; no third-party tool): every `import` and
`from ... import` of our own packages, wherever it sits in the module: function-level imports and
type-only ones under `if TYPE_CHECKING:` count too (a type-only circle is still a circle). An import of
`package.name` counts as an import of the module `package.name` when that module exists, else of
`package`.

Layers (docs/architecture.md draws them):
    protocol/ -> nothing of ours above it
    mappings/ -> protocol/ only
    simulator/ -> protocol/ and mappings/, never gateway/
    gateway/south -> never north/, ops/, cli/
    gateway/core  -> never north/, ops/, cli/, south/
    gateway/ops   -> never north/, cli/ (the HTTP API and MQTT commands in north/ call ops/)
    gateway/north -> never south/ internals (the driver contract `south.drivers.base` is public), cli/
    gateway/app   -> never cli/
The exceptions still allowed are listed in `KNOWN_UPWARD` with the reason; the test fails when one
disappears, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "mappings", "simulator", "gateway")
MAX_GATEWAY_MODULE_LINES = 800

# (importer prefix, forbidden prefixes). A module matches a prefix when it is it or lies below it.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("protocol", ("mappings", "gateway", "simulator")),
    ("mappings", ("gateway", "simulator")),
    ("simulator", ("gateway",)),
    ("gateway.south", ("gateway.north", "gateway.ops", "gateway.cli")),
    ("gateway.core", ("gateway.north", "gateway.ops", "gateway.cli", "gateway.south")),
    ("gateway.north", ("gateway.cli", "gateway.south")),
    ("gateway.ops", ("gateway.north", "gateway.cli")),
    ("gateway.app", ("gateway.cli",)),
)
# North may use the driver contract (capabilities, Priority, errors): it is south's public face.
PUBLIC = ("gateway.south.drivers.base",)

# Upward imports not yet removed (issue 15), each with why it is still there.
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    # The Tianpower `describe` names parameters through the parameter table (decode CLI).
    ("protocol.bms.tianpower.describe", "mappings.bms.params"): "describe/mappings de-coupling: phase 2",
    # The inverter RS485 port opens its serial line with the south transport.
    ("gateway.north.rs485.service", "gateway.south.transport"): "a shared transport layer: phase 2",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [*subs, base]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                yield resolved


GRAPH: dict[str, set[str]] = {m: set(_imported(m, p)) for m, p in MODULES.items()}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_is_read() -> None:
    assert {"protocol.bms.bootloader", "gateway.app.wiring", "simulator.core"} <= set(MODULES)
    assert "gateway.core.policy.engine" in GRAPH["gateway.core.policy.service"]
    assert sum(len(v) for v in GRAPH.values()) > 300, "too few edges: the walk proves nothing"


def test_imports_point_downward() -> None:
    found: set[tuple[str, str]] = set()
    for module, targets in GRAPH.items():
        for importer, forbidden in RULES:
            if not _under(module, importer):
                continue
            for target in targets:
                if any(_under(target, f) for f in forbidden) and not any(_under(target, p) for p in PUBLIC):
                    found.add((module, target))
    assert found - set(KNOWN_UPWARD) == set(), "upward imports"
    assert set(KNOWN_UPWARD) - found == set(), "a known exception is gone: remove it from KNOWN_UPWARD"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph has a few hundred modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert _strongly_connected(GRAPH) == []


@pytest.mark.parametrize("package", ["gateway"])
def test_no_module_over_the_size_limit(package: str) -> None:
    sizes = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_GATEWAY_MODULE_LINES
    }
    assert sizes == {}


def test_ops_never_asks_for_a_family_by_name() -> None:
    """Capabilities are declared by the drivers; ops/ checks them with isinstance."""
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "gateway" / "ops").rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if ".family ==" in line or "family in (" in line or "BY_FAMILY" in line
    ]
    assert offenders == []
