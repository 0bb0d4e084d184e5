"""Keys: created 0600 and idempotently, found in the documented order, wrong ones refused clearly."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from audit_testlib import check, fill, make_settings

from appliance.audit import AuditKeyError, AuditLog
from appliance.audit.keys import KEY_FILE, SIGNING_KEY_FILE, resolve_read_path
from appliance.cli import main
from appliance.config import Settings


def test_init_keys_is_idempotent_and_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["audit", "init-keys", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.count("created") == 2
    keys = {p.name: p.read_bytes() for p in (state / "keys").iterdir()}
    assert set(keys) == {KEY_FILE, SIGNING_KEY_FILE}
    for path in (state / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "keys").stat().st_mode) == 0o700
    assert main(["audit", "init-keys", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.count("kept") == 2
    assert {p.name: p.read_bytes() for p in (state / "keys").iterdir()} == keys


def test_init_keys_reads_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('[server]\nstate_dir = "st"\n[audit]\nkey_file = "secrets/aes.key"\n')
    assert main(["audit", "init-keys", "--config", str(config)]) == 0
    assert (tmp_path / "secrets" / "aes.key").exists()
    assert (tmp_path / "st" / "keys" / SIGNING_KEY_FILE).exists()


def test_resolution_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    default = settings.server.state_dir / "keys" / KEY_FILE
    creds = tmp_path / "creds"
    creds.mkdir()
    assert resolve_read_path(settings, KEY_FILE, env={}) == default
    assert resolve_read_path(settings, KEY_FILE, env={"CREDENTIALS_DIRECTORY": str(creds)}) == default
    (creds / KEY_FILE).write_bytes(default.read_bytes())
    assert resolve_read_path(settings, KEY_FILE, env={"CREDENTIALS_DIRECTORY": str(creds)}) == creds / KEY_FILE
    explicit = settings.replace("audit", key_file=tmp_path / "explicit.key")
    with pytest.raises(AuditKeyError, match=r"audit.key_file = .*explicit.key does not exist"):
        resolve_read_path(explicit, KEY_FILE, env={"CREDENTIALS_DIRECTORY": str(creds)})


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings().replace("server", state_dir=tmp_path / "empty")
    with pytest.raises(AuditKeyError, match=r"'audit.key' not found .*init-keys.*audit.enabled = false"):
        AuditLog.open(settings, env={})


async def test_wrong_key_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    await fill(settings, 3)
    key = settings.server.state_dir / "keys" / KEY_FILE
    key.write_text(os.urandom(32).hex() + "\n")
    with pytest.raises(AuditKeyError, match=r"written with key id\(s\) \w+ \(records from seq 1\).*wrong key"):
        AuditLog.open(settings, env={})
    assert main(["audit", "export", "--state-dir", str(settings.server.state_dir)]) == 2
    assert "is not in the audit keyring" in capsys.readouterr().err
    report = check(settings)
    assert report.first_problem is not None and report.first_problem.kind == "unknown-key"


def test_malformed_key_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    (settings.server.state_dir / "keys" / KEY_FILE).write_text("not-hex\n")
    with pytest.raises(AuditKeyError, match="line 1: not hexadecimal"):
        AuditLog.open(settings, env={})
    (settings.server.state_dir / "keys" / KEY_FILE).write_text("abcd\n")
    with pytest.raises(AuditKeyError, match="2 bytes, expected 32"):
        AuditLog.open(settings, env={})


async def test_wrong_signing_key_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await fill(settings, 2)
    (settings.server.state_dir / "keys" / SIGNING_KEY_FILE).write_text(os.urandom(32).hex() + "\n")
    with pytest.raises(AuditKeyError, match="not the key that signed"):
        AuditLog.open(settings, env={})


async def test_rotation_keeps_old_records_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    state = str(settings.server.state_dir)
    await fill(settings, 4)
    assert main(["audit", "rotate-key", "--state-dir", state]) == 0
    capsys.readouterr()
    await fill(settings, 4, start=4)
    lines = (settings.server.state_dir / "keys" / KEY_FILE).read_text().split()
    assert len([line for line in lines if len(line) == 64]) == 2
    assert stat.S_IMODE((settings.server.state_dir / "keys" / KEY_FILE).stat().st_mode) == 0o600
    assert main(["audit", "export", "--state-dir", state]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, 10))
    by_key = {}
    for row in rows:
        by_key.setdefault(row["key_id"], []).append(row["action"])
    assert len(by_key) == 2
    old, new = by_key.values()
    assert old == ["infer"] * 4 and new == ["key_create"] + ["infer"] * 4
    assert rows[0]["principal"] and rows[-1]["principal"]
    assert check(settings).ok
