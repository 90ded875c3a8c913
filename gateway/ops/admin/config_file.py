"""Persisting the gateway's own inverter protocol selection into its configuration file.

Only `[can] protocol` and `[inverter_rs485] protocol` are ever changed here. The file is edited with
tomlkit, so comments, key order and formatting survive; the result is validated with the normal
configuration loader before it replaces the file (atomically, same folder, same permissions), so a
change can never leave a configuration the gateway would refuse at the next start.

This module must never touch any other key and never write a file it did not validate.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from gateway.app.config import ConfigError, parse_config

SECTIONS = {"can": "can", "rs485": "inverter_rs485"}


def set_protocols(path: Path, changes: dict[str, str]) -> str:
    """Set `protocol` in the sections named by `changes` ("can" / "rs485" -> protocol name).

    Returns the new file text. Raises ConfigError when the file is unreadable or the result would
    not be a valid configuration (the file is then left untouched).
    """
    import tomlkit  # only when an operator switches a protocol: not at every start
    from tomlkit.items import InlineTable, Table

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read the configuration file {path}: {err}") from None
    try:
        doc = tomlkit.parse(text)
    except Exception as err:  # tomlkit raises several parse error types
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for which, protocol in changes.items():
        section = SECTIONS[which]
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        if not isinstance(table, Table | InlineTable):  # `[can]`, `can = {...}` or `can.protocol = ...`
            raise ConfigError(f"{path}: [{section}] is not a table")
        table["protocol"] = protocol
    new_text = tomlkit.dumps(doc)
    parse_config(tomllib.loads(new_text), env={})  # refuse to write what would not load
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new_text
