"""Run Home Assistant's own MQTT discovery code on what the gateway published (HA's interpreter).

Not a test module: `test_home_assistant.py` runs it with the Python of the Home Assistant virtual
environment (`make ha-venv`), feeding a JSON file of captured messages:
  {"discovery": {topic: payload}, "states": {topic: [payload, ...]}, "extra_states": {topic: [...]}}
and reads one JSON object back on stdout:
  {"version", "devices", "entities", "platforms": {...}, "values": {component id: state on the last
   published document of its topic}, "errors": [...], "template_warnings": [...]}

For every device discovery payload it does what HA's `mqtt/discovery.py` does: expand
abbreviations, validate with DEVICE_DISCOVERY_SCHEMA, split into components, merge the device's
shared options, and validate each component with its platform's DISCOVERY_SCHEMA (sensor: units,
device and state classes). Then it renders every value template with HA's template engine against
every state document published on the component's state topic (and the synthetic ones in
`extra_states`), collecting every template warning HA would log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
from typing import Any


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


async def check(data: dict[str, Any]) -> dict[str, Any]:
    import voluptuous as vol
    from homeassistant.components.mqtt import binary_sensor, sensor
    from homeassistant.components.mqtt import discovery as ha_discovery
    from homeassistant.components.mqtt.discovery import MQTTDiscoveryPayload
    from homeassistant.components.mqtt.schemas import DEVICE_DISCOVERY_SCHEMA
    from homeassistant.const import __version__
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers import frame, template

    # everything HA logs at WARNING or above while it validates or renders is a finding (HA 2025.4
    # only warns about a unit that does not fit a device class; 2025.7 refuses the entity)
    capture = Capture()
    logging.getLogger("homeassistant").addHandler(capture)
    config_dir = tempfile.TemporaryDirectory()
    hass = HomeAssistant(config_dir.name)  # the schemas' template validators look for a running hass
    frame.async_setup(hass)
    schemas = {"sensor": sensor.DISCOVERY_SCHEMA, "binary_sensor": binary_sensor.DISCOVERY_SCHEMA}
    errors: list[str] = []
    platforms: dict[str, int] = {}
    components: list[tuple[str, dict[str, Any]]] = []
    for topic, raw in sorted(data["discovery"].items()):
        payload = MQTTDiscoveryPayload(json.loads(raw))
        ha_discovery._replace_all_abbreviations(payload)
        try:
            DEVICE_DISCOVERY_SCHEMA(payload)
        except vol.Invalid as exc:
            errors.append(f"{topic}: device discovery schema: {exc}")
            continue
        for cid, comp in payload["components"].items():
            conf = MQTTDiscoveryPayload(dict(comp))
            platform = conf.pop("platform")
            conf["device"] = payload["device"]
            conf["origin"] = payload.get("origin")
            ha_discovery._merge_common_device_options(conf, payload)
            schema = schemas.get(platform)
            if schema is None:
                errors.append(f"{topic} {cid}: platform {platform!r} not checked here")
                continue
            before = len(capture.records)
            try:
                validated = schema(dict(conf))
            except vol.Invalid as exc:
                errors.append(f"{topic} {cid}: {platform} schema: {exc}")
                continue
            errors.extend(f"{topic} {cid}: {platform}: {m}" for m in capture.records[before:])
            platforms[platform] = platforms.get(platform, 0) + 1
            components.append((f"{topic} {cid}", {**validated, "_qos_given": "qos" in comp, "_id": cid}))

    renders = 0
    values: dict[str, object] = {}  # component id -> its state on the last published document
    for where, conf in components:
        state_topic = conf.get("state_topic")
        docs = list(data["states"].get(state_topic, [])) + list(data["extra_states"].get(state_topic, []))
        value_template = conf.get("value_template")
        if value_template is None:
            continue
        tpl = template.Template(str(value_template.template), hass)
        for doc in docs:
            before = len(capture.records)
            tpl.async_render_with_possible_json_value(doc, "<default>")
            renders += 1
            for message in capture.records[before:]:
                errors.append(f"{where}: template warning on {state_topic}: {message}")
        published = data["states"].get(state_topic)
        if published:
            values[conf["_id"]] = tpl.async_render_with_possible_json_value(published[-1], "<default>")
    await hass.async_stop(force=True)
    config_dir.cleanup()
    return {
        "version": __version__,
        "devices": len(data["discovery"]),
        "entities": len(components),
        "platforms": platforms,
        "qos": sorted({int(c["qos"]) for _, c in components}),
        "qos_per_component": all(c["_qos_given"] for _, c in components),
        "renders": renders,
        "values": values,
        "errors": errors,
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    result = asyncio.run(check(data))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
