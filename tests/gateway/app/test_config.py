"""Configuration: validation messages, the check/show commands, the example file and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.app.config import Config, ConfigError, load_config, parse_config
from gateway.cli.main import main
from tests.support import REPO

ROOT = REPO


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_file_is_valid() -> None:
    cfg = load_config(ROOT / "deploy" / "config.example.toml", env={})
    assert [b.name for b in cfg.bus] == ["bus1", "pace"]
    assert cfg.bus[1].pace_master_only


def test_integrator_keys_exist_with_their_meaning() -> None:
    cfg = parse_config(
        {
            "bus": [
                {"name": "bus1", "url": "socket://127.0.0.1:4001", "protocol": "auto", "addresses": [1, 2, 3]}
            ],
            "http": {"listen": "127.0.0.1:8080"},
            "modbus": {"listen": "127.0.0.1:5020"},
            "can": {"interface": "virtual", "channel": "vcan0", "protocol": "pylon"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        },
        env={},
    )
    assert cfg.bus[0].protocol == "auto" and cfg.bus[0].addresses == [1, 2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[http]\nlisen = "x"\n', "http.lisen: unknown key"),
        ('[[bus]]\nname = "b"\nurl = "/dev/x"\nprotocol = "modbus"\n', "bus.0.protocol"),
        ('[[bus]]\nname = "b"\nurl = "/dev/x"\naddresses = [16]\n', "bus.0.addresses.0"),
        ('[[bus]]\nname = "b"\nurl = "/dev/x"\nretries = "many"\n', "bus.0.retries"),
        (
            '[[bus]]\nname = "b"\nurl = "/dev/x"\nstale_after_s = 30\noffline_after_s = 20\n',
            "offline_after_s",
        ),
        ('[http]\nlisten = "localhost"\n', "expected HOST:PORT"),
        ("[http\n", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(write(tmp_path, text), env={})


def test_wrong_protocol_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[[bus]]\nname = "b"\nurl = "/dev/x"\nprotocol = "modbus"\n'), env={})
    assert "'tianpower'" in str(info.value) and "'auto'" in str(info.value)


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, '[[bus]]\nname = "b"\nurl = "socket://h:1"\naddresses = [1, 2]\n')
    assert main(["config", "check", str(good)]) == 0
    assert "OK (1 bus(es), 2 pack(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[modbus]\nsunspec_unit = 0\nnative_unit = 0\n", encoding="utf-8")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "modbus.sunspec_unit" in err and "greater than or equal to 1" in err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_config_show_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write(tmp_path, '[mqtt]\nusername = "u"\npassword = "hunter2"\n')
    assert main(["config", "show", "--config", str(f)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and 'password = "***"' in out and "[[bus]]" not in out
    monkeypatch.setenv("BMS_GATEWAY_MQTT_PASSWORD", "from-env")
    assert main(["config", "show", "--config", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mqtt"]["password"] == "***" and data["http"]["listen"] == "127.0.0.1:8080"
    assert main(["config", "show"]) == 0  # defaults only
    assert 'listen = "127.0.0.1:8080"' in capsys.readouterr().out


def test_run_with_a_bad_config_exits_2_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, '[[bus]]\nname = "b"\nurl = "socket://h:1"\nbaudrate = 1234\n')
    assert main(["run", "--config", str(f)]) == 2
    assert "bus.0.baudrate" in capsys.readouterr().err


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_key_is_documented() -> None:
    from gateway.app.config import BusConfig

    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    keys = _keys(Config, "") + _keys(BusConfig, "bus.")
    missing = [k for k in keys if k != "bus" and f"`{k.rsplit('.', 1)[-1]}`" not in doc]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"
    for section in ("[[bus]]", "[http]", "[modbus]", "[can]", "[mqtt]", "[simulator]"):
        assert f"`{section}`" in doc
