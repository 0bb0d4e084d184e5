"""The writer's fast paths agree byte for byte with the reference definitions verify relies on."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
from audit_testlib import check, make_settings, raw, record
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audit import AuditLog, AuditRecord, store
from appliance.audit.keys import Keyring
from appliance.audit.sealing import (
    NONCE_BYTES,
    SEALED_FIELDS,
    NoncePool,
    prepare,
    recomputed_hash,
    row_hash,
    seal,
    seal_chain,
    stored_row,
    unseal,
)

_KEYRING = Keyring([os.urandom(32)], Path("test.key"))
_TEXT = st.text(max_size=12)  # includes non-ASCII and lone surrogates
_records = st.builds(
    AuditRecord, action=_TEXT, request_id=_TEXT, principal=_TEXT, client=_TEXT, model=_TEXT,
    version=st.one_of(_TEXT, st.integers(0, 10**6)), status=st.integers(0, 999),
    latency_ms=st.floats(allow_nan=True, allow_infinity=True), cache_hit=st.booleans(), device=_TEXT,
    input_sha256=_TEXT, output_sha256=_TEXT, detail=_TEXT,
    summary=st.none() | st.dictionaries(st.text(max_size=4),
                                        st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)),
    payload=st.none() | st.binary(max_size=16))


@settings(max_examples=150, deadline=None)
@given(st.lists(_records, min_size=1, max_size=5), st.integers(0, 10**9))
def test_seal_chain_is_seal_in_a_loop(records: list[AuditRecord], start: int) -> None:
    """seal_chain's precomputed hash encoding is exactly row_hash over the stored columns."""
    prepared = [prepare(r, time.time_ns()) for r in records]
    nonces = NoncePool().take(len(prepared))
    prev = os.urandom(32)
    rows = seal_chain(prepared, start, prev, _KEYRING, nonces)
    for i, (p, nonce, row) in enumerate(zip(prepared, nonces, rows, strict=True)):
        assert row == seal(p, start + i + 1, prev, _KEYRING, nonce)
        assert row[-1] == row_hash([*row[:-1], prev])
        stored = stored_row(row, prev)
        assert recomputed_hash(stored) == row[-1]
        assert unseal(stored, _KEYRING) == _sealed_fields(records[i])
        prev = row[-1]


def _sealed_fields(record: AuditRecord) -> dict[str, object]:
    """What unseal() must give back for ``record``: every sealed field (strings as stored)."""
    def clean(text: str) -> str:
        return text.encode("utf-8", "replace").decode("utf-8")

    fields: dict[str, object] = {name: clean(getattr(record, name)) for name in SEALED_FIELDS if name != "summary"}
    fields["summary"] = orjson.loads(orjson.dumps(record.summary)) if record.summary else None  # inf → null
    fields["payload"] = record.payload or None
    return fields


def test_nonce_pool_never_repeats_across_refills() -> None:
    pool = NoncePool()
    taken = [n for size in (1, 4095, 3, 5000, 17) for n in pool.take(size)]
    assert all(len(n) == NONCE_BYTES for n in taken)
    assert len(set(taken)) == len(taken) == 9116


def test_append_after_writes_only_onto_the_expected_head(tmp_path: Path) -> None:
    """The one-statement append is a compare-and-append: when another process moved the head,
    it writes nothing and says so; after a purge the anchor is the head it chains onto."""
    db = store.connect(tmp_path / "audit.db")
    conn = db.conn
    seq, head = store.head(conn, store.log_id(db))
    first = seal_chain([prepare(record(0), time.time_ns())], seq, head, _KEYRING, NoncePool().take(1))
    assert not store.append_after(conn, first, head)  # an empty log has no head row to compare
    with store.immediate(conn):
        store.insert_rows(conn, first)
    later = seal_chain([prepare(record(i), time.time_ns()) for i in (1, 2)], 1, first[0][-1], _KEYRING,
                       NoncePool().take(2))
    assert not store.append_after(conn, later, head)  # stale head: nothing written
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    assert store.append_after(conn, later, first[0][-1])
    assert [r[0] for r in conn.execute("SELECT seq FROM records ORDER BY seq")] == [1, 2, 3]
    assert not conn.in_transaction  # the statement committed itself
    conn.execute("INSERT INTO anchor VALUES (1, 3, ?, 'x', 3, 'y')", (later[-1][-1],))
    conn.execute("DELETE FROM records")
    after_purge = seal_chain([prepare(record(4), time.time_ns())], 3, later[-1][-1], _KEYRING, NoncePool().take(1))
    assert store.append_after(conn, after_purge, later[-1][-1])
    db.close()


async def test_writer_falls_back_when_another_process_appends(tmp_path: Path) -> None:
    """The server's writer chains onto rows another process wrote between two of its commits."""
    config = make_settings(tmp_path)
    server = AuditLog.open(config)
    await server.append(record(0))
    await server.append(record(1))  # the fast path from here on
    cli = AuditLog.open(config)
    await cli.append(record(50))
    await cli.aclose()
    await asyncio.gather(*(server.append(record(i)) for i in range(2, 6)))
    await server.aclose()
    report = check(config)
    assert report.ok and report.rows == 7, report.problems
    with raw(config) as conn:
        requests = [r[0] for r in conn.execute("SELECT seq FROM records ORDER BY seq")]
    assert requests == list(range(1, 8))
