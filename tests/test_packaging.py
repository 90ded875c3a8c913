"""Packaging and layering: the installed wheel works on its own, and the layers import only downward.

- Every third-party module the runtime imports is a declared runtime dependency (a test extra is
  not installed with the wheel).
- The wheel built from this tree carries the data in `mappings/`; unpacked away from the source
  tree it decodes a parameter table through the mapping and serves a simulated pack.
- `protocol/` imports no I/O library (asyncio, serial, sockets, python-can, pymodbus) and nothing
  of `gateway`; `mappings/` imports neither `gateway` nor an I/O library either.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from mappings.bms.params import load_table
from protocol.bms.tianpower import messages as m
from protocol.bms.tianpower.frame import TianpowerDecoder, TpFrame

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "protocol", "mappings", "simulator")
IO_MODULES = {"asyncio", "serial", "serial_asyncio", "serial_asyncio_fast", "socket", "socketserver",
              "selectors", "can", "pymodbus", "pyModbusTCP", "threading", "subprocess"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module (wherever it sits in the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["protocol", "mappings"])
def test_lower_layers_import_no_io_library_and_not_the_runtime(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in _sources(package)
        if (bad := _imports(path) & (IO_MODULES | {"gateway"}))
    }
    assert offenders == {}
    assert _sources(package), "no sources found: the check would prove nothing"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # runtime extras count too: "fast" (uvloop) is imported only when installed (gateway.app.loop)
    runtime = [*project["dependencies"], *project["optional-dependencies"]["fast"]]
    declared = {_normalise(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in runtime}
    dists = importlib.metadata.packages_distributions()
    local = set(PACKAGES)
    missing: dict[str, str] = {}
    for package in PACKAGES:
        for path in _sources(package):
            for name in _imports(path) - local - set(sys.stdlib_module_names) - {"__future__"}:
                providers = {_normalise(d) for d in dists.get(name, [])}
                if not providers & declared:
                    missing[f"{path.relative_to(ROOT)}: {name}"] = ", ".join(sorted(providers)) or "?"
    assert missing == {}, "imported at run time but not in [project].dependencies"


def _built_wheel(tmp_path: Path) -> Path:
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("bms_gateway-*.whl")
    return wheel


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_wheel_ships_the_mappings_and_works_outside_the_source_tree(tmp_path: Path) -> None:
    wheel = _built_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mappings").rglob("*") if p.suffix in {
        ".toml", ".dbc", ".csv", ".json"}}  # fmt: skip
    assert data and data <= names, sorted(data - names)
    assert (
        "bms-gateway = gateway.cli.main:main"
        in zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )

    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install of this tree
    work = tmp_path / "elsewhere"
    work.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import sys, gateway.cli.main; sys.exit(gateway.cli.main.main())", *args],
            capture_output=True, text=True, cwd=work, env=env, timeout=60,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import gateway, mappings; print(gateway.__file__); print(mappings.__file__)"],
        capture_output=True, text=True, cwd=work, env=env, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(site) for p in where), where

    sample = cli("decode", "--protocol", "tianpower", "7E", "01", "01", "00", "FE", "0D")
    assert sample.returncode == 0, sample.stderr
    assert '"command_name": "realtime data"' in sample.stdout

    specs = load_table("tianpower").where_wire(table=0xE0)
    records = tuple(
        m.ParamRecord(s.wire["record"], s.to_wire(s.default)) for s in specs if s.default is not None
    )
    table = cli("decode", "--protocol", "tianpower", m.encode_param_table(1, records).hex(" "))
    assert table.returncode == 0, table.stderr
    assert '"CELL_OV_Start"' in table.stdout  # decoded through mappings/bms/tianpower.toml

    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, gateway.cli.main; sys.exit(gateway.cli.main.main())", "simulate",
         "--protocol", "tianpower", "--packs", "2", "--listen", "127.0.0.1:0", "--no-pacing"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening: 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        decoder = TianpowerDecoder()
        frames: list[TpFrame] = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(m.encode_request(m.ReadRequest(2, m.Cmd.REALTIME)))
            deadline = time.monotonic() + 10
            while not frames and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                assert chunk, "simulator closed the connection"
                decoder.feed(chunk)
                frames = [f for f in decoder.frames() if isinstance(f, TpFrame)]
        assert frames and frames[0].address == 2 and frames[0].command == m.Cmd.REALTIME
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_nothing_in_the_repository_points_outside_it() -> None:
    """A person who clones the project has only the project: no `../shared/...` paths, and no
    citation of a section of a reference document the repository does not hold."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"\.\./shared|\breference\b[^§\n]{0,40}§|\.\./reference/|\.\./seed/")
    me = Path(__file__).resolve().relative_to(ROOT).as_posix()
    found = []
    for name in tracked:
        if name == me or not name.endswith((".py", ".md", ".toml", ".dbc", ".txt", ".yml", ".yaml", ".cfg")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        found += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert found == []
