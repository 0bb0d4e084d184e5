"""Refused requests reach the real audit log (encrypted SQLite), read back with `appliance audit export`."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import aiohttp
from aiohttp import web
from auth_testlib import DIGITS_ROW, create_key, running, settings_for

from appliance.appkeys import AUDIT
from appliance.audit import AuditLog
from appliance.cli import main


def _cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


async def test_auth_failures_are_audited(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = create_key(state, "dash", "read")
    assert _cli("audit", "init-keys", "--state-dir", str(state)) == 0
    settings = settings_for(repository, state).replace("audit", enabled=True)
    opened: list[AuditLog] = []

    def attach(app: web.Application) -> None:
        if AUDIT not in app:  # the factory did not wire one (yet): hand the middleware a real log
            opened.append(AuditLog.open(settings))
            app[AUDIT] = opened[0]

    async with running(settings, prepare=attach) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v2", headers={"X-API-Key": "mak_0123456789abcdef_nope"}) as response:
            assert response.status == 401
        async with session.post(f"{url}/v2/models/digits/infer", json=DIGITS_ROW,
                                headers={"X-API-Key": key}) as response:
            assert response.status == 403
    for log in opened:
        await log.aclose()
    out = tmp_path / "export.jsonl"
    assert _cli("audit", "export", "--state-dir", str(state), "--output", str(out)) == 0
    failures = [r for r in map(json.loads, out.read_text().splitlines()) if r["action"] == "auth_failure"]
    assert [(r["status"], r["principal"], r["client"]) for r in failures] == [(401, "", "127.0.0.1"),
                                                                             (403, "dash", "127.0.0.1")]
    assert "invalid API key" in failures[0]["detail"] and "infer" in failures[1]["detail"]
