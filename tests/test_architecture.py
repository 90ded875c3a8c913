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
    gateway/io    -> nothing of the gateway (byte links shared by south and north)
    gateway/docs  -> mappings/ and protocol/ only (docs generators; nothing imports them)
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
    (
        "gateway.io",
        ("gateway.app", "gateway.south", "gateway.core", "gateway.north", "gateway.ops", "gateway.cli"),
    ),
    (
        "gateway.docs",
        (
            "gateway.app",
            "gateway.io",
            "gateway.south",
            "gateway.core",
            "gateway.north",
            "gateway.ops",
            "gateway.cli",
        ),
    ),
    ("gateway.south", ("gateway.north", "gateway.ops", "gateway.cli")),
    ("gateway.core", ("gateway.north", "gateway.ops", "gateway.cli", "gateway.south")),
    ("gateway.north", ("gateway.cli", "gateway.south")),
    ("gateway.ops", ("gateway.north", "gateway.cli")),
    ("gateway.app", ("gateway.cli",)),
)
# North may use the driver contract (capabilities, Priority, errors): it is south's public face.
PUBLIC = ("gateway.south.drivers.base",)

# Upward imports still allowed, each with why it is still there (none left: the list only shrinks).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


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


def test_services_share_typed_fields_never_a_string_keyed_bag() -> None:
    """What services share is a typed field of `AppContext` (no `ctx.extras[...]`, no
    `getattr(service, "stats", None)`): an AST walk of gateway/ and tests/ for either form."""
    from dataclasses import fields

    from gateway.app.context import AppContext

    assert "extras" not in {f.name for f in fields(AppContext)}
    offenders = []
    for path in [*(ROOT / "gateway").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            by_name = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in ("stats", "latest", "audit_log")
            )
            if (isinstance(node, ast.Attribute) and node.attr == "extras") or by_name:
                offenders.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}")
    assert offenders == []


def test_every_service_is_installed_one_way() -> None:
    """`gateway.app.wiring` builds every adapter through `install(ctx) -> list[Service]`, the edge
    first (`build_edge_services`), then the rest (`build_ops_services`)."""
    tree = ast.parse(MODULES["gateway.app.wiring"].read_text(encoding="utf-8"))
    builders = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name in ("build_edge_services", "build_ops_services")
    ]
    assert len(builders) == 2
    imported = [
        (n.module, a.name)
        for build in builders
        for n in ast.walk(build)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("gateway.")
        for a in n.names
        if n.module != "gateway.app"
    ]
    assert len(imported) >= 10
    assert all(name == "install" for _, name in imported), imported
    # what the second phase installs is what `run_app` imports in the worker thread beforehand
    from gateway.app.wiring import OPS_MODULES

    ops = {m for n in ast.walk(builders[1]) if isinstance(n, ast.ImportFrom) and (m := n.module)}
    assert ops <= set(OPS_MODULES), ops - set(OPS_MODULES)
    for module, _ in imported:
        install = next(
            n
            for n in ast.parse(MODULES[module].read_text(encoding="utf-8")).body
            if isinstance(n, ast.FunctionDef) and n.name == "install"
        )
        returns = install.returns
        assert returns is not None, f"{module}.install has no return annotation"
        text = returns.value if isinstance(returns, ast.Constant) else ast.unparse(returns)
        assert text == "list[Service]", f"{module}.install returns {text}"


# Where a family or protocol name may be written as a string: its registry, and the modules that
# are that family or protocol (its codec, its driver, its simulated side). Everything else takes the
# names from the registries.
NAME_HOMES: dict[str, str] = {
    "protocol/bms/registry.py": "the BMS family registry",
    "gateway/south/drivers/registry.py": "the driver registry",
    "protocol/inverter/can/registry.py": "the CAN protocol registry",
    "protocol/inverter/rs485/registry.py": "the RS485 protocol registry",
    "simulator/core.py": "the simulated responders' registry (RESPONDERS)",
    "protocol/bms/tianpower/": "the Tianpower codec",
    "protocol/bms/pace/": "the PACE codec",
    "protocol/inverter/can/": "each CAN protocol module names itself",
    "protocol/inverter/rs485/": "each RS485 protocol module names itself",
    "gateway/south/drivers/tianpower.py": "the Tianpower driver",
    "gateway/south/drivers/pace.py": "the PACE driver",
    "simulator/tianpower.py": "the simulated Tianpower pack",
    "simulator/tp_model.py": "the simulated Tianpower pack",
    "simulator/pace.py": "the simulated PACE pack",
    "simulator/pace_model.py": "the simulated PACE pack",
    # The firmware image header stores a family code; the generic image format maps it.
    "protocol/bms/bootloader.py": "image header family codes (FAMILY_CODES)",
}


def _registered_names() -> set[str]:
    from protocol.bms import registry as bms
    from protocol.inverter.can import registry as can
    from protocol.inverter.rs485 import registry as rs485

    return {*bms.names(), *can.PROTOCOLS.names(), *rs485.names()}


def test_family_and_protocol_names_come_from_the_registries() -> None:
    names = _registered_names()
    assert {"tianpower", "pace", "pylon", "byd-modbus"} <= names
    offenders = []
    for package in ("gateway", "protocol", "mappings", "simulator"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            if any(where == home or (home.endswith("/") and where.startswith(home)) for home in NAME_HOMES):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), where)
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            offenders += [
                f"{where}:{node.lineno}: {node.value!r}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
            ]
    assert offenders == []


def test_the_name_check_finds_a_literal() -> None:
    tree = ast.parse('family = "pace"')
    assert any(isinstance(n, ast.Constant) and n.value in _registered_names() for n in ast.walk(tree))


def test_mappings_hold_data_and_loaders_and_nothing_imports_the_docs_tooling() -> None:
    """Rendering docs is tooling (gateway/docs/); mappings/ keeps data, schemas and loaders."""
    renderers = [
        f"{m}.{n.name}"
        for m, p in MODULES.items()
        if m.startswith("mappings")
        for n in ast.parse(p.read_text(encoding="utf-8")).body
        if isinstance(n, ast.FunctionDef) and n.name.startswith(("markdown", "render"))
    ]
    assert renderers == []
    importers = {m for m, targets in GRAPH.items() for t in targets if _under(t, "gateway.docs")}
    assert {m for m in importers if not _under(m, "gateway.docs")} == set()
