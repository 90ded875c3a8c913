"""Every capture file names where its bytes come from (address, date, device, origin)."""

from __future__ import annotations

import re

import pytest

from tests.support.captures import ORIGINS, all_files, load

PROTOCOLS = {"pylon-rs485", "pylon-can", "pace", "tianpower"}
KINDS = {"request", "answer", "answer-info"}


def test_there_are_captures_for_every_protocol_we_speak() -> None:
    protocols = {c.protocol for f in all_files() for c in load(f)}
    assert protocols == PROTOCOLS


@pytest.mark.parametrize("file", all_files())
def test_provenance_is_complete(file: str) -> None:
    captures = load(file)
    assert captures, file
    source = captures[0].source
    assert source["url"].startswith("https://"), file
    assert source["origin"] in ORIGINS, file
    assert source["device"].strip(), file
    if "repository" in source and "path" in source:  # a file in a repository: pinned to a commit
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), file
        assert source["commit"] in source["url"] and source["path"] in source["url"], file
    if "date" in source:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", source["date"]), file
    names = [c.name for c in captures]
    assert len(names) == len(set(names)), file
    for c in captures:
        assert c.protocol in PROTOCOLS and c.kind in KINDS, (file, c.name)
        assert c.text, (file, c.name)
