"""deploy/: compose file, Prometheus, Grafana provisioning and dashboard, Mosquitto, systemd, udev."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from gateway.app.config import load_config
from gateway.north.metrics.collector import FAMILIES
from tests.support import REPO

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "bms-gateway.json"

TARGET_LABELS = {"site", "instance", "job"}  # added by Prometheus (site: deploy/prometheus/prometheus.yml)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def exported_labels() -> dict[str, set[str]]:
    """Every series name the gateway exports, with the labels it carries (scrape labels included)."""
    names: dict[str, set[str]] = {}
    for fam in FAMILIES:
        labels = set(fam.labels) | TARGET_LABELS
        if fam.kind == "histogram":
            names[fam.name + "_bucket"] = labels | {"le"}
            names[fam.name + "_sum"] = labels
            names[fam.name + "_count"] = labels
        else:
            names[fam.name] = labels
    return names


def exported_names() -> set[str]:
    return set(exported_labels())


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables the way Grafana does before sending a query to Prometheus."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", r"\1", expr)


@dataclass
class QueryUse:
    """What one PromQL expression selects: metric names, label names per metric, grouping labels."""

    matchers: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)
    made: set[str] = field(default_factory=set)  # labels created by label_replace

    @property
    def names(self) -> set[str]:
        return set(self.matchers)


def query_use(expr: str) -> QueryUse:
    """Parse `expr` with a real PromQL parser (raises ValueError on a syntax error) and collect what it
    selects."""
    use = QueryUse()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers}
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"selector without a metric name in {expr!r}"
            use.matchers.setdefault(name, set()).update(labels - {"__name__"})
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            use.grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                use.grouping.update(node.modifier.matching.labels)
            use.grouping.update(node.modifier.group_labels or [])
        elif isinstance(node, promql_parser.Call) and node.func.name in ("label_replace", "label_join"):
            use.made.add(node.args[1].val)

    promql_parser.walk(promql_parser.parse(grafana_to_promql(expr)), visit)
    return use


def check_query(expr: str, exported: dict[str, set[str]]) -> set[str]:
    """Assert that `expr` parses and selects only exported series by labels they carry; returns the
    metric names it uses."""
    use = query_use(expr)
    assert use.names, f"no metric in {expr!r}"
    unknown = use.names - set(exported)
    assert not unknown, f"{expr!r} selects metrics the gateway does not export: {unknown}"
    available: set[str] = set(use.made)
    for name, labels in use.matchers.items():
        assert labels <= exported[name], f"{expr!r}: {name} has no label {labels - exported[name]}"
        available |= exported[name]
    missing = use.grouping - available
    assert not missing, f"{expr!r} groups by labels no selected series has: {missing}"
    return use.names


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def test_compose_file_wires_the_stack() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) >= {"gateway", "mosquitto", "prometheus", "grafana"}
    gw = services["gateway"]
    assert (DEPLOY / gw["build"]["context"] / gw["build"]["dockerfile"]).is_file()
    # every bind mount names a file or folder that exists in deploy/
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), (name, src)
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # nothing exposed beyond localhost
    named = {
        v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")
    }
    assert named <= set(compose.get("volumes", {}))
    # the gateway's config: simulator, HTTP on the port Prometheus scrapes, MQTT to the mosquitto service
    mount = next(v for v in gw["volumes"] if v.endswith("/etc/bms-gateway/config.toml:ro"))
    config = load_config(DEPLOY / mount.split(":")[0], env={})
    assert config.simulator.enabled and config.mqtt.enabled
    assert config.mqtt.url == "mqtt://mosquitto:1883"
    http_port = config.http.listen.rsplit(":", 1)[1]
    assert f"{http_port}:{http_port}" in " ".join(gw["ports"])
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "bms-gateway")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"gateway:{http_port}"]
    assert job["static_configs"][0]["labels"]["site"]  # the dashboard's site variable reads it
    graf = services["grafana"]
    assert graf["environment"]["PROM_URL"] == "http://prometheus:9090"


def test_grafana_provisioning_and_datasource_uids_are_consistent() -> None:
    ds = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "${PROM_URL}"
    uid = source["uid"]
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/bms.yaml")["providers"]
    compose = load_yaml(DEPLOY / "compose.yaml")
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    assert mounts["./grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in walk_panels(dash["panels"]) if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["datasource"]["uid"] == uid, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid, p["title"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == uid
    ids = [p["id"] for p in walk_panels(dash["panels"])]
    assert len(ids) == len(set(ids))


def test_every_panel_query_names_an_exported_metric() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_labels()
    used: set[str] = set()
    queries = 0
    for p in walk_panels(dash["panels"]):
        for t in p.get("targets", []):
            try:
                used |= check_query(t["expr"], exported)
            except (ValueError, AssertionError) as err:
                raise AssertionError(f"panel {p['title']!r}: {err}") from err
            queries += 1
    assert queries >= 20
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), *([a-z_]+)\)", var["query"]["query"])
        assert m, var["query"]
        names = check_query(m.group(1), exported)
        assert all(m.group(2) in exported[n] for n in names), var["query"]
    # the dashboard covers what the issue asks for
    for required in (
        "bms_bank_state_of_charge_ratio",
        "bms_pack_cell_voltage_volts",
        "bms_pack_cell_voltage_spread_volts",
        "bms_pack_temperature_celsius",
        "bms_pack_current_amperes",
        "bms_pack_power_watts",
        "bms_pack_state_of_health_ratio",
        "bms_limit_charge_current_amperes",
        "bms_limit_limiting_factor",
        "bms_pack_protection",
        "bms_pack_alarm",
        "bmsgw_poll_duration_seconds_bucket",
        "bmsgw_pack_up",
    ):
        assert required in used, required


def test_query_check_parses_and_rejects() -> None:
    """The dashboard check uses a real PromQL parser: syntax errors, unknown metrics and labels fail."""
    exported = exported_labels()
    expr = (
        'histogram_quantile(0.95, sum by (le, bus) (rate(bmsgw_poll_duration_seconds_bucket{site=~"$site"}'
        "[$__rate_interval])))"
    )
    assert check_query(expr, exported) == {"bmsgw_poll_duration_seconds_bucket"}
    assert check_query('sum(bms_pack_alarm{name="x y"}) or vector(0)', exported) == {"bms_pack_alarm"}
    assert check_query("time() - bmsgw_pack_last_success_timestamp_seconds", exported) == {
        "bmsgw_pack_last_success_timestamp_seconds"
    }
    assert query_use('sum by (le) (rate(x_bucket{a="1"}[5m])) * on (b) group_left (c) y').grouping == {
        "le",
        "b",
        "c",
    }
    for broken in ("sum(rate(bms_pack_alarm[5m])", 'bms_pack_alarm{name="x"', "bms_pack_alarm +", "sum by"):
        with pytest.raises(ValueError):
            query_use(broken)
    for wrong in (
        "bms_pack_no_such_metric",
        'bms_pack_alarm{no_such_label="x"}',
        "sum by (cell) (bms_pack_current_amperes)",
        'rate(bmsgw_poll_duration_seconds{bus="b"}[5m])',  # a histogram has no bare series
    ):
        with pytest.raises(AssertionError):
            check_query(wrong, exported)


def test_dashboard_has_site_and_pack_variables() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"site", "pack"} <= set(variables)
    for name in ("site", "pack"):
        var = variables[name]
        assert var["type"] == "query" and var["query"]["query"].replace(" ", "").endswith(f",{name})")
    per_pack = 0
    for p in walk_panels(dash["panels"]):
        for t in p.get("targets", []):
            use = query_use(t["expr"])
            # every selector of every panel is filtered by the site variable
            for metric, labels in use.matchers.items():
                assert "site" in labels and "$site" in t["expr"], (p["title"], metric)
            if "$pack" in t["expr"]:
                per_pack += 1
                assert all("pack" in labels for labels in use.matchers.values()), p["title"]
    assert per_pack >= 5


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd/bms-gateway.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["SupplementaryGroups"] == "dialout"
    assert service["StateDirectory"] == "bms-gateway"
    assert "CAP_NET_BIND_SERVICE" in service["AmbientCapabilities"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "AF_CAN" in service["RestrictAddressFamilies"]
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_udev_rules_give_stable_names() -> None:
    rules = [
        line
        for line in (DEPLOY / "udev/99-bms-rs485.rules").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules
    for rule in rules:
        assert 'SUBSYSTEM=="tty"' in rule and 'GROUP="dialout"' in rule and 'TAG+="systemd"' in rule
        link = re.search(r'SYMLINK\+="([^"]+)"', rule)
        assert link and not link.group(1).startswith("ttyUSB")


def test_containerfile_runs_the_console_script_unprivileged() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["bms-gateway"]' in text
    assert re.search(r"^USER bmsgw$", text, re.M)
    for path in ("gateway", "protocol", "mappings", "simulator", "pyproject.toml", "README.md"):
        assert f"COPY {path}" in text or "COPY pyproject.toml README.md" in text


@pytest.fixture
def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        # the compose file runs Mosquitto in a container; here only the syntax can be checked
        text = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
        assert re.search(r"^listener 1883 ", text, re.M)
        return ""
    return found


@pytest.mark.e2e
def test_mosquitto_conf_is_accepted_by_mosquitto(mosquitto_binary: str, tmp_path: Path) -> None:
    text = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    assert re.search(r"^listener 1883 0\.0\.0\.0$", text, re.M)
    if not mosquitto_binary:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = text.replace("listener 1883 0.0.0.0", f"listener {port} 127.0.0.1").replace(
        "/mosquitto/data/", f"{tmp_path}/"
    )
    conf = tmp_path / "m.conf"
    conf.write_text(local, encoding="utf-8")
    proc = subprocess.Popen(
        [mosquitto_binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "mosquitto exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_can_network_file() -> None:
    net = configparser.ConfigParser()
    net.read_string((DEPLOY / "networkd/80-can0.network").read_text(encoding="utf-8"))
    assert net["Match"]["Name"] == "can0" and net["CAN"]["BitRate"] == "500000"
