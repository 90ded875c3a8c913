"""Where the start-up's CPU goes: the third-party libraries' imports against the gateway's own work.

`bench/startup.py` measures exec -> `/readyz` of the real process. This one takes the same work
apart, in one thread and with the garbage collector off (as `bms-gateway run` starts), so each
part is timed alone:

1. `ours`: the command line, the configuration, `build_edge_services` (buses, Modbus, policy,
   CAN), the import of the HTTP stack and `build_ops_services` plus the FastAPI application: the
   services of `bench/startup.py`'s configuration (Modbus, Pylon CAN on `virtual`, MQTT, one
   Tianpower bus of 15 packs, and metrics, recording and the HTTP API as they are by default), no
   socket opened;
2. `third-party`: a fresh interpreter importing only the third-party packages step 1 imported
   (found from its `sys.modules`): the floor no change of ours can go below.

The difference is what the gateway's own code costs: its modules (their dataclasses, enums,
tables), its pydantic models, FastAPI's work on its routes, the mapping files it reads.
`--python` runs the same on other interpreters (a virtual environment with this checkout
installed), e.g. to see whether a newer CPython starts faster.

Last lines: `RESULT startup_account_<py3NN>_total_s=...`, `..._third_party_s=...`, `..._ours_s=...`
for each interpreter and the same without the version for the one running the bench (best of
`--repeat`, each its own process).
Usage: .venv/bin/python bench/startup_account.py [--repeat 5] [--python /path/to/python ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

PACKAGES = ("gateway", "protocol", "mappings")
PHASES = r"""
import gc, json, sys, tempfile, time
gc.disable()
t0 = time.perf_counter()
from gateway.cli.main import build_parser
build_parser(["run", "--config", "x.toml"])
from gateway.app.config import Config
from gateway.app.wiring import OPS_MODULES, build_context, build_edge_services, build_ops_services
t1 = time.perf_counter()
config = Config.model_validate({
    "state_dir": tempfile.mkdtemp(), "log_level": "warning",
    "modbus": {"listen": "127.0.0.1:0"},
    "can": {"enabled": True, "interface": "virtual", "channel": "account", "protocol": "pylon"},
    "mqtt": {"enabled": True, "url": "mqtt://127.0.0.1:1"},
    "bus": [{"name": "b", "url": "socket://127.0.0.1:9", "protocol": "tianpower",
             "addresses": list(range(1, 16))}],
})
ctx = build_context(config, None)
edge = build_edge_services(ctx)
t2 = time.perf_counter()
import importlib
for name in OPS_MODULES:
    importlib.import_module(name)
t3 = time.perf_counter()
ops = build_ops_services(ctx)
from gateway.north.http.app import create_app
create_app(ctx)
t4 = time.perf_counter()
site = [p for p in sys.path if p.endswith("site-packages")]
third = sorted({
    name.partition(".")[0] for name, m in list(sys.modules.items())
    if getattr(m, "__file__", None) and any(m.__file__.startswith(s) for s in site)
    and not name.partition(".")[0].startswith("_")
})
print(json.dumps({"cli_config": t1 - t0, "edge": t2 - t1, "ops_imports": t3 - t2,
                  "ops_build": t4 - t3, "total": t4 - t0, "third_party": third}))
"""

IMPORTS = r"""
import gc, importlib, json, sys, time
gc.disable()
names = json.loads(sys.argv[1])
t0 = time.perf_counter()
for name in names:
    importlib.import_module(name)
print(json.dumps({"imports": time.perf_counter() - t0}))
"""


def run(python: str, code: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [python, "-c", code, *args], cwd=benchlib.ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def account(python: str, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    third: list[str] = []
    for _ in range(repeat):
        r = run(python, PHASES)
        third = r.pop("third_party")  # type: ignore[assignment]
        for k, v in r.items():
            best[k] = min(best.get(k, float("inf")), float(v))  # type: ignore[arg-type]
    floor = min(float(run(python, IMPORTS, json.dumps(third))["imports"]) for _ in range(repeat))  # type: ignore[arg-type]
    best["third_party"] = floor
    best["ours"] = best["total"] - floor
    best["packages"] = len(third)
    return best


def label(python: str, taken: set[str]) -> str:
    """`py311` for a CPython 3.11; a second interpreter of the same version gets `py311_2`."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    name = base = "py" + out.stdout.strip()
    n = 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each part; the best counts")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        help="another interpreter with this checkout installed (repeatable); this one always runs",
    )
    args = parser.parse_args()
    pythons = [sys.executable, *args.python]
    for python in pythons:  # byte-compiled as `pip install` does; each interpreter has its own cache tag
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", *PACKAGES], cwd=benchlib.ROOT, check=True
        )
    taken: set[str] = set()
    rows = {label(p, taken): account(p, args.repeat) for p in pythons}
    print(f"machine: {benchlib.machine()}")
    print(f"best of {args.repeat}, one thread, garbage collector off; seconds")
    cols = ("cli_config", "edge", "ops_imports", "ops_build", "total", "third_party", "ours")
    print(f"{'python':<8}" + "".join(f"{c:>13}" for c in cols))
    for name, r in rows.items():
        print(f"{name:<8}" + "".join(f"{r[c]:>13.3f}" for c in cols))
    for name, r in rows.items():
        print(f"  {name}: {int(r['packages'])} third-party packages imported")
    for i, (name, r) in enumerate(rows.items()):
        for key in ("total", "third_party", "ours"):
            print(f"RESULT startup_account_{name}_{key}_s={r[key]:.3f}")
            if i == 0:  # this interpreter's, under a name that does not depend on its version
                print(f"RESULT startup_account_{key}_s={r[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
