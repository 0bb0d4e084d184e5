"""Purge and export: the chain stays verifiable after retention; exports decrypt and filter."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from audit_testlib import PRINCIPAL, check, fill, make_settings, raw, reseal

from appliance.audit import AuditError, audit_paths
from appliance.audit.export import parse_when
from appliance.audit.retention import purge
from appliance.cli import main
from appliance.config import Settings


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    await fill(settings, 20)
    _retime(settings, {seq: f"2024-01-{seq:02d}T12:00:00.000000Z" for seq in range(1, 21)})
    return settings


def _retime(settings: Settings, times: dict[int, str]) -> None:
    """Re-date the rows to those days, re-sealing and re-signing with the appliance's own keys
    (a fixture, not an attack: it yields a log as if written on those days)."""
    from appliance.audit import checkpoints, store
    from appliance.audit.keys import load_signing_key

    def edit(seq: int, values: dict[str, Any], fields: dict[str, Any]) -> None:
        values["time_us"] = store.time_us(times[seq])

    reseal(settings, 1, edit)
    signing = load_signing_key(settings.server.state_dir / "keys" / "audit-signing.key")
    paths = audit_paths(settings)
    with raw(settings) as conn:
        log = conn.execute("SELECT value FROM meta").fetchone()[0]
        last = conn.execute("SELECT seq, row_hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    paths.checkpoints.write_bytes(b"")
    checkpoints.append(paths.checkpoints, checkpoints.make(signing, "checkpoint", log, last[0], last[1], 0))


def test_fixture_is_consistent(settings: Settings) -> None:
    assert check(settings).ok


def test_purge_keeps_the_chain_verifiable(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(settings.server.state_dir)
    assert main(["audit", "purge", "--state-dir", state, "--before", "2024-01-08"]) == 0
    assert "purged 7 records up to seq 7" in capsys.readouterr().out
    with raw(settings) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM records ORDER BY seq")]
    assert seqs == list(range(8, 22))  # seq 21 records the purge itself
    assert main(["audit", "verify", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert "7 rows up to seq 7 were purged" in out and "OK: 14 rows (seq 8..21)" in out
    assert main(["audit", "purge", "--state-dir", state, "--before", "2024-01-08"]) == 0
    assert "nothing to purge" in capsys.readouterr().out
    assert main(["audit", "purge", "--state-dir", state, "--before", "2024-01-11"]) == 0  # a second purge
    report = check(settings)
    assert report.ok and report.first_seq == 11, report.problems


def test_deleting_the_oldest_rows_is_not_a_purge(settings: Settings) -> None:
    with raw(settings) as conn:
        digest = conn.execute("SELECT row_hash FROM records WHERE seq = 5").fetchone()[0]
        conn.execute("DELETE FROM records WHERE seq <= 5")
    problem = check(settings).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (1, "missing")
    with raw(settings) as conn:  # a forged anchor without the signing key
        conn.execute("INSERT INTO anchor VALUES (1, 5, ?, 'x', 5, 'x')", (digest,))
    problem = check(settings).first_problem
    assert problem is not None and (problem.seq, problem.kind) == (6, "unsigned-anchor")


def test_purge_refuses_a_tampered_log(settings: Settings) -> None:
    with raw(settings) as conn:
        conn.execute("UPDATE records SET status = 201 WHERE seq = 3")
    with pytest.raises(AuditError, match=r"does not verify .*seq 3: modified.*not purging"):
        purge(settings, parse_when("2024-01-08"))


def test_export_filters_by_time_and_writes_csv(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(settings.server.state_dir)
    assert main(["audit", "export", "--state-dir", state, "--since", "2024-01-03", "--until",
                 "2024-01-05T12:00:00"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [3, 4]
    assert rows[0]["principal"] == PRINCIPAL and rows[0]["summary"]["confidence"] == 0.97
    assert main(["audit", "export", "--state-dir", state, "--format", "csv", "--output",
                 str(settings.server.state_dir / "x.csv")]) == 0
    with (settings.server.state_dir / "x.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 20 and json.loads(table[0]["summary"])["top_class"] == 0


def test_parse_when() -> None:
    assert parse_when("2024-01-08") == "2024-01-08T00:00:00.000000Z"
    assert parse_when("2024-01-08T02:00:00+02:00") == "2024-01-08T00:00:00.000000Z"
    with pytest.raises(AuditError, match="not a date"):
        parse_when("last tuesday")
