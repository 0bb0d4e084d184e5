"""Each kind of tampering is caught by verify, naming the first bad seq and what is wrong."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from audit_testlib import check, fill, make_settings, raw, reseal

from appliance.audit import audit_paths
from appliance.cli import main
from appliance.config import Settings


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    for start in (0, 10, 20):  # signed checkpoints at seq 0, 10, 20 and 30 (at each open and close)
        await fill(settings, 10, start)
    report = check(settings)
    assert report.ok and report.rows == 30, report.problems
    return settings


def first(settings: Settings, *, decrypt: bool = True) -> tuple[int, str, str]:
    report = check(settings, decrypt=decrypt)
    problem = report.first_problem
    assert problem is not None, "tampering went unnoticed"
    return problem.seq, problem.kind, problem.message


def cli_verify(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--state-dir", str(settings.server.state_dir)])
    return code, capsys.readouterr().out


def test_untouched_log_verifies_through_the_cli(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli_verify(settings, capsys)
    assert code == 0 and out.startswith("OK: 30 rows (seq 1..30)"), out


def test_one_flipped_ciphertext_byte(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with raw(settings) as conn:
        blob = bytearray(conn.execute("SELECT ciphertext FROM records WHERE seq = 12").fetchone()[0])
        blob[5] ^= 0x01
        conn.execute("UPDATE records SET ciphertext = ? WHERE seq = 12", (bytes(blob),))
    assert first(settings)[:2] == (12, "modified")
    code, out = cli_verify(settings, capsys)
    assert code == 1 and out.startswith("FAILED at seq 12: modified"), out


def test_changed_clear_column(settings: Settings) -> None:
    with raw(settings) as conn:
        conn.execute("UPDATE records SET status = 500 WHERE seq = 3")
    assert first(settings, decrypt=False)[:2] == (3, "modified")


def test_deleted_row(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with raw(settings) as conn:
        conn.execute("DELETE FROM records WHERE seq = 7")
    seq, kind, message = first(settings)
    assert (seq, kind) == (7, "missing") and "seq 7" in message
    code, out = cli_verify(settings, capsys)
    assert code == 1 and "seq 7: missing" in out


def test_swapped_rows(settings: Settings) -> None:
    with raw(settings) as conn:
        conn.execute("BEGIN")
        conn.execute("UPDATE records SET seq = -1 WHERE seq = 5")
        conn.execute("UPDATE records SET seq = 5 WHERE seq = 6")
        conn.execute("UPDATE records SET seq = 6 WHERE seq = -1")
        conn.execute("COMMIT")
    seq, kind, message = first(settings)
    assert (seq, kind) == (5, "reordered"), message


def test_newest_rows_deleted(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with raw(settings) as conn:
        conn.execute("DELETE FROM records WHERE seq > 26")
    seq, kind, message = first(settings)
    assert (seq, kind) == (27, "truncated") and "seq 30" in message
    code, out = cli_verify(settings, capsys)
    assert code == 1 and "seq 27: truncated" in out


def test_checkpoint_file_deleted_with_the_newest_rows(settings: Settings) -> None:
    with raw(settings) as conn:
        conn.execute("DELETE FROM records WHERE seq > 26")
    audit_paths(settings).checkpoints.unlink()
    assert first(settings)[1] == "truncated"


def _reseal_from(settings: Settings, start: int, principal: str) -> None:
    """An insider with the AES key but not the signing key: rewrite row ``start``, re-encrypt it
    and every later row (the AAD binds the previous hash), and recompute the whole chain."""
    def edit(seq: int, values: dict[str, Any], fields: dict[str, Any]) -> None:
        if seq == start:
            fields["principal"] = principal

    reseal(settings, start, edit)


def test_resealed_row_with_recomputed_chain(settings: Settings) -> None:
    _reseal_from(settings, 14, "mallory")
    seq, kind, message = first(settings)
    assert (seq, kind) == (20, "modified") and "rows after seq 10 were rewritten" in message


def test_forged_checkpoints_need_the_signing_key(settings: Settings) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.audit import checkpoints

    _reseal_from(settings, 14, "mallory")
    path = audit_paths(settings).checkpoints
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    own_key = Ed25519PrivateKey.generate()
    with raw(settings) as conn:
        heads = {r[0]: r[1] for r in conn.execute("SELECT seq, row_hash FROM records")}
    forged = [checkpoints.make(own_key, "checkpoint", line["log_id"], line["seq"],
                               heads.get(line["seq"], bytes.fromhex(line["head"])), 0) for line in lines]
    path.write_bytes(b"".join(orjson.dumps(dataclasses.asdict(cp)) + b"\n" for cp in forged))
    kinds = {p.kind for p in check(settings).problems}
    assert "bad-signature" in kinds and "truncated" in kinds  # forged lines rejected; none left


def test_bad_signature_on_one_checkpoint(settings: Settings) -> None:
    path = audit_paths(settings).checkpoints
    lines = path.read_bytes().splitlines()
    data = orjson.loads(lines[1])
    data["head"] = "00" * 32
    lines[1] = orjson.dumps(data)
    path.write_bytes(b"\n".join(lines) + b"\n")
    seq, kind, _ = first(settings)
    assert (seq, kind) == (data["seq"], "bad-signature")


def test_verify_without_the_aes_key_still_checks_chain_and_signatures(settings: Settings) -> None:
    assert check(settings, decrypt=False).ok
    with raw(settings) as conn:
        conn.execute("DELETE FROM records WHERE seq > 28")
    assert first(settings, decrypt=False)[:2] == (29, "truncated")


def test_verify_of_a_missing_database_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    assert main(["audit", "verify", "--state-dir", str(settings.server.state_dir)]) == 2
    assert "no audit database" in capsys.readouterr().err
    with pytest.raises(sqlite3.OperationalError):  # and verify did not create one
        sqlite3.connect(f"file:{audit_paths(settings).database}?mode=ro", uri=True).execute("SELECT 1")


def test_exported_checkpoints_catch_a_truncated_checkpoint_file(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(settings.server.state_dir)
    copy = tmp_path / "offsite.jsonl"
    assert main(["audit", "checkpoints", "--state-dir", state, "--output", str(copy)]) == 0
    public = capsys.readouterr().err.split()[-1]
    path = audit_paths(settings).checkpoints
    kept = [line for line in path.read_bytes().splitlines() if orjson.loads(line)["seq"] <= 20]
    path.write_bytes(b"\n".join(kept) + b"\n")  # drop the newest rows and the lines that cover them
    with raw(settings) as conn:
        conn.execute("DELETE FROM records WHERE seq > 20")
    assert cli_verify(settings, capsys)[0] == 0  # the local file alone cannot tell
    code = main(["audit", "verify", "--state-dir", state, "--checkpoints", str(copy), "--public-key", public])
    out = capsys.readouterr().out
    assert code == 1 and "seq 21: truncated" in out, out
