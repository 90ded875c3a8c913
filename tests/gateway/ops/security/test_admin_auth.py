"""Tokens (hashed storage, roles, revocation), the rate limiter, the append-only audit log and the
`token` command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ops.security.audit import AuditLog
from gateway.ops.security.auth import AuthError, RateLimiter, Role, TokenStore


def test_token_roundtrip_and_hash_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    rec, token = store.create(Role.OPERATOR, "ems")
    secret = token.split("_", 2)[2]
    text = (tmp_path / "tokens.json").read_text()
    assert secret not in text and rec.sha256 in text
    who = TokenStore(tmp_path / "tokens.json").authenticate(token)
    assert who.role is Role.OPERATOR and who.token_id == rec.id
    with pytest.raises(AuthError):
        store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))
    with pytest.raises(AuthError, match="malformed"):
        store.authenticate("Bearer nonsense")
    assert store.revoke(rec.id)
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(token)


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN < Role.FACTORY
    assert Role.parse("Admin") is Role.ADMIN
    with pytest.raises(ValueError, match="allowed: viewer, operator, admin, factory"):
        Role.parse("root")


def test_rate_limiter_window() -> None:
    rl = RateLimiter(2)
    assert rl.allow("a", now=0.0) and rl.allow("a", now=1.0)
    assert not rl.allow("a", now=2.0)
    assert rl.allow("b", now=2.0)
    assert rl.allow("a", now=60.5)


def test_audit_is_append_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    n = log.append(
        token_id="t1",
        role="admin",
        client="127.0.0.1",
        action="parameters.write",
        packs=["bus1/1"],
        request={"values": {"CELL_OV_Start": 3.6}},
        before={"CELL_OV_Start": 3.65},
        after={"CELL_OV_Start": 3.6},
        outcome="ok",
    )
    entries = log.query()
    assert [e.id for e in entries] == [n]
    assert entries[0].before == {"CELL_OV_Start": 3.65} and entries[0].packs == ["bus1/1"]
    log.close()
    db = sqlite3.connect(tmp_path / "audit.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET outcome='x'")
    db.close()


@pytest.mark.e2e
def test_token_create_command_prints_token_last(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('state_dir = "state"\n[admin]\ntokens_file = "tok.json"\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "token",
            "create",
            "--role",
            "admin",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("bmsg_")
    stored = json.loads((tmp_path / "state" / "tok.json").read_text())
    assert stored["tokens"][0]["role"] == "admin"
    assert TokenStore(tmp_path / "state" / "tok.json").authenticate(token).role is Role.ADMIN
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "token", "create", "--role", "root", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "allowed: viewer" in bad.stderr
