"""Format 2 (issue 20): compact rows, exact round trips, and format-1 logs kept verifiable."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from audit_testlib import PRINCIPAL, check, fill, make_settings, raw, record

from appliance.audit import AuditLog, AuditRecord, audit_paths, plaintext
from appliance.audit.export import records as exported
from appliance.audit.keys import KEY_FILE, SIGNING_KEY_FILE, load_keyring, load_signing_key
from appliance.audit.retention import purge_through
from appliance.config import Settings

FORMAT1 = Path(__file__).parent / "testdata" / "format1" / "state"


def _prediction(**changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "request_id": "9f" * 16, "principal": "api-key:reporting", "client": "10.1.2.3", "model": "digits",
        "version": "2", "status": 200, "latency_ms": 1.234, "device": "CPU", "input_sha256": "ab" * 32,
        "output_sha256": "cd" * 32, "manifest_sha256": "ef" * 32, "route": "canary",
        "summary": {"output": "probabilities", "rows": 1, "top_class": [3], "confidence": [0.9731]}}
    fields.update(changes)
    return AuditRecord("infer", **fields)  # type: ignore[arg-type]


def test_a_prediction_seals_compactly_and_comes_back_exactly() -> None:
    record = _prediction()
    encoded = plaintext.encode(record)
    assert len(encoded) <= 180, len(encoded)  # format 1: a ~330-byte JSON header, without the last two
    fields = plaintext.decode(encoded)
    for name in plaintext.TEXT_FIELDS:
        assert fields[name] == getattr(record, name)
    assert fields["summary"] == record.summary and fields["payload"] is None


def test_values_that_do_not_pack_are_kept_as_given() -> None:
    odd = _prediction(request_id="AB" * 16, client="::ffff:10.0.0.1", input_sha256="ab " * 21,
                      summary={"output": "p", "rows": 2, "top_class": [1, 70000], "confidence": [0.5, 1.00001]},
                      payload=b"\x00raw", detail="é")
    fields = plaintext.decode(plaintext.encode(odd))
    given = (odd.request_id, odd.client, odd.input_sha256)
    assert (fields["request_id"], fields["client"], fields["input_sha256"]) == given
    assert fields["summary"] == odd.summary and fields["payload"] == b"\x00raw" and fields["detail"] == "é"
    six = plaintext.decode(plaintext.encode(_prediction(client="2001:db8::1")))
    assert six["client"] == "2001:db8::1"


async def test_a_format1_log_migrates_and_stays_verifiable(tmp_path: Path) -> None:
    """A log written before issue 20 (tests/audit/testdata/format1, made by the previous release):
    its rows keep their hashes, new rows chain onto them, verify, export and purge see one log."""
    state = tmp_path / "state"
    shutil.copytree(FORMAT1, state)
    for key in (KEY_FILE, SIGNING_KEY_FILE):
        (state / "keys" / key).chmod(0o600)
    settings = Settings().replace("server", state_dir=state).replace("audit", checkpoint_every=10)
    await fill(settings, 5, start=100)
    with raw(settings) as conn:
        assert conn.execute("SELECT count(*) FROM records_v1").fetchone()[0] == 12
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 5
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # one VACUUM made it incremental
    report = check(settings)
    assert report.ok and (report.first_seq, report.last_seq) == (1, 17), report.problems
    keyring = load_keyring(state / "keys" / KEY_FILE)
    rows = list(exported(audit_paths(settings).database, keyring))
    assert [r["seq"] for r in rows] == list(range(1, 18))
    assert {r["principal"] for r in rows} == {PRINCIPAL} and rows[0]["request_id"] == "req-0"
    assert rows[-1]["request_id"] == "req-104" and rows[-1]["latency_ms"] == 105.25
    paths = audit_paths(settings)
    assert purge_through(paths.database, paths.checkpoints, load_signing_key(state / "keys" / SIGNING_KEY_FILE),
                         14) == 14  # across the two formats
    report = check(settings)
    assert report.ok and report.first_seq == 15, report.problems


async def test_bytes_per_prediction_record(tmp_path: Path) -> None:
    """Growth of audit.db per prediction record, WAL folded in, index and page overhead included."""
    settings = make_settings(tmp_path, checkpoint_every=1000)
    await fill(settings, 50)
    database = audit_paths(settings).database

    def size() -> int:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return database.stat().st_size

    before = size()
    log = AuditLog.open(settings)
    for i in range(3000):
        log.append_nowait(_prediction(request_id=f"{i:032x}", input_sha256=f"{i:064x}"))
    await log.aclose()
    per_record = (size() - before) / 3000
    assert per_record <= 400, per_record
    assert record(0).payload  # the fill above used full records with payloads: they verify too
    assert check(settings).ok
