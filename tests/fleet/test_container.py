"""The container image and the compose file, with a real container engine where one is present.

Checked always (the file itself): non-root user, a HEALTHCHECK on /readyz, the console script as
entry point. With a working engine (`docker info` or `podman info` succeeds) the image is built and
started on the simulator, its health must turn "healthy" and its size is printed; the compose file is
validated with `docker compose config` / `podman compose config`. Without one the test says why it
skipped: no daemon on this machine (a docker CLI without a daemon does not count).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid

import pytest

from tests.fleet.stack import DEPLOY, ROOT

pytestmark = [pytest.mark.fleet, pytest.mark.e2e, pytest.mark.timeout(1200)]

CONTAINERFILE = (DEPLOY / "Containerfile").read_text(encoding="utf-8")


def test_image_runs_unprivileged_with_a_readiness_healthcheck() -> None:
    assert re.search(r"^USER bmsgw$", CONTAINERFILE, re.M)
    assert re.search(r"useradd --system --uid 10001 ", CONTAINERFILE)
    check = re.search(r"^HEALTHCHECK .*\n\s+CMD (.*)$", CONTAINERFILE, re.M)
    assert check and "/readyz" in check.group(1), "the health check must ask /readyz"
    assert 'ENTRYPOINT ["bms-gateway"]' in CONTAINERFILE


def engine() -> str:
    reasons = []
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"no {name}")
            continue
        probe = subprocess.run([path, "info"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return path
        reasons.append(
            f"{name} present but `{name} info` fails ({(probe.stderr or probe.stdout).strip()[-120:]})"
        )
    pytest.skip("no working container engine: " + "; ".join(reasons))


def run(*args: str, timeout: float = 900) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc.stdout


def test_image_builds_becomes_healthy_and_compose_validates() -> None:
    tool = engine()
    tag = f"localhost/bms-gateway-test:{uuid.uuid4().hex[:8]}"
    run(tool, "build", "-f", str(DEPLOY / "Containerfile"), "-t", tag, str(ROOT))
    name = f"bmsgw-test-{uuid.uuid4().hex[:8]}"
    try:
        run(tool, "run", "-d", "--name", name, tag, "run")
        deadline = time.monotonic() + 120
        status = ""
        while time.monotonic() < deadline and status != "healthy":
            if tool.endswith("podman"):  # podman runs health checks only from systemd timers or on demand
                subprocess.run(
                    [tool, "healthcheck", "run", name], capture_output=True, timeout=30, check=False
                )
            status = run(tool, "inspect", "--format", "{{.State.Health.Status}}", name).strip()
            time.sleep(2)
        assert status == "healthy"
        user = run(tool, "exec", name, "id", "-u").strip()
        assert user != "0"
        size = run(tool, "image", "inspect", "--format", "{{.Size}}", tag).strip()
        print(f"\nimage {tag}: {int(size) / 1e6:.0f} MB")
    finally:
        subprocess.run([tool, "rm", "-f", name], capture_output=True, timeout=60, check=False)
        subprocess.run([tool, "rmi", "-f", tag], capture_output=True, timeout=60, check=False)
    compose = run(tool, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", timeout=120)
    assert "gateway:" in compose and "prometheus:" in compose
