#!/usr/bin/env bash
# Build a Home Assistant core (pinned) in its own virtual environment, for the tests that
# run Home Assistant's MQTT discovery schemas and template engine on what the gateway publishes
# (tests/fleet/test_home_assistant.py). Home Assistant 2025.4.4 needs Python >= 3.13; newer releases
# need >= 3.13.2. Exits 0 with a message when no such Python is found (the test then says why it skips).
set -euo pipefail
cd "$(dirname "$0")/../.."
HA_VERSION="${HA_VERSION:-2025.4.4}"
# outside the work tree, so that a fresh clone on the same machine (CI) reuses it
VENV="${BMS_GATEWAY_HA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/bms-gateway/ha-$HA_VERSION}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import homeassistant.const as c, sys; sys.exit(c.__version__ != '$HA_VERSION')" 2>/dev/null; then
  exit 0
fi
PY=""
for candidate in python3.14 python3.13 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.14*/bin/python3.14 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
    PY="$(command -v "$candidate")"
    break
  fi
done
if [ -z "$PY" ]; then
  echo "ha-venv: no Python >= 3.13 found; the Home Assistant schema test will be skipped" >&2
  exit 0
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "homeassistant==$HA_VERSION" "paho-mqtt>=2,<3"
"$VENV/bin/python" -c "import homeassistant.const as c; print('ha-venv: Home Assistant', c.__version__, 'with', __import__('sys').version.split()[0])"
