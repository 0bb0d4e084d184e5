"""API keys, scopes, limits and throttling against a real server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiohttp
import pytest
from auth_testlib import DIGITS_ROW, create_key, running, settings_for

from appliance.cli import main


async def _status(session: aiohttp.ClientSession, method: str, url: str, key: str | None = None,
                  **kwargs: object) -> tuple[int, dict[str, str], dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.request(method, url, headers=headers, **kwargs) as response:
        return response.status, dict(response.headers), await response.json()


async def test_scopes_models_and_revocation(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    infer_key = create_key(state, "ci", "infer")
    read_key = create_key(state, "dash", "read")
    other_model_key = create_key(state, "other", "infer,read", models="another")
    async with running(settings_for(repository, state)) as url, aiohttp.ClientSession() as session:
        infer = f"{url}/v2/models/digits/infer"
        assert (await _status(session, "GET", f"{url}/v2/health/live"))[0] == 200  # health stays open
        status, headers, body = await _status(session, "POST", infer, json=DIGITS_ROW)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await _status(session, "POST", infer, infer_key, json=DIGITS_ROW))[0] == 200
        async with session.post(infer, json=DIGITS_ROW, headers={"X-API-Key": infer_key}) as response:
            assert response.status == 200
        status, _, body = await _status(session, "POST", infer, read_key, json=DIGITS_ROW)
        assert status == 403 and "infer" in body["error"]
        assert (await _status(session, "GET", f"{url}/v2/models/digits", read_key))[0] == 200
        assert (await _status(session, "GET", f"{url}/v2/models/digits", infer_key))[0] == 403
        status, _, body = await _status(session, "POST", infer, other_model_key, json=DIGITS_ROW)
        assert status == 403 and "digits" in body["error"]
        # An unknown route needs a principal first (strangers cannot map the routes), then 404.
        assert (await _status(session, "GET", f"{url}/nowhere"))[0] == 401
        assert (await _status(session, "GET", f"{url}/nowhere", read_key))[0] == 404
        # Tampered secret, unknown id, malformed, other scheme: all 401.
        for bad in (infer_key[:-2] + "xx", "mak_0123456789abcdef_" + "A" * 43, "mak_short", "garbage"):
            assert (await _status(session, "POST", infer, bad, json=DIGITS_ROW))[0] == 401
        async with session.get(f"{url}/v2", headers={"Authorization": "Basic dXNlcjpwYXNz"}) as response:
            assert response.status == 401
        assert main(["keys", "revoke", "ci", "--state-dir", str(state)]) == 0
        for _ in range(40):  # the server re-reads the store at most once a second
            if (await _status(session, "POST", infer, infer_key, json=DIGITS_ROW))[0] == 401:
                break
            await asyncio.sleep(0.05)
        assert (await _status(session, "POST", infer, infer_key, json=DIGITS_ROW))[0] == 401
        assert (await _status(session, "GET", f"{url}/v2", read_key))[0] == 200  # others unaffected


def test_store_holds_hashes_only_with_private_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create_key(tmp_path, "ops", "admin,audit")
    store = tmp_path / "api-keys.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text and "ops" in text
    assert main(["keys", "create", "--name", "ops", "--scopes", "read", "--state-dir", str(tmp_path)]) == 1
    assert main(["keys", "create", "--name", "x", "--scopes", "read,root", "--state-dir", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["keys", "list", "--state-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "ops\tadmin,audit\t*" in listed and secret not in listed
    assert main(["keys", "revoke", "nobody", "--state-dir", str(tmp_path)]) == 1


async def test_rate_limit_per_principal(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, second = create_key(state, "a", "read"), create_key(state, "b", "read")
    settings = settings_for(repository, state, limits={"rate_limit_rps": 0.5, "rate_limit_burst": 3})
    async with running(settings) as url, aiohttp.ClientSession() as session:
        codes = [(await _status(session, "GET", f"{url}/v2", first))[0] for _ in range(3)]
        status, headers, body = await _status(session, "GET", f"{url}/v2", first)
        assert codes == [200, 200, 200] and status == 429
        assert 1 <= int(headers["Retry-After"]) <= 2 and "rate limit" in body["error"]
        assert (await _status(session, "GET", f"{url}/v2", second))[0] == 200  # per principal


async def test_failures_are_throttled_per_address(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    good = create_key(state, "a", "read")
    settings = settings_for(repository, state, auth={"failure_limit_per_minute": 3})
    async with running(settings) as url, aiohttp.ClientSession() as session:
        for _ in range(3):
            assert (await _status(session, "GET", f"{url}/v2", "mak_bad"))[0] == 401
        status, headers, body = await _status(session, "GET", f"{url}/v2", good)
        assert status == 429 and 50 <= int(headers["Retry-After"]) <= 60
        assert "authentication failures" in body["error"]
        assert (await _status(session, "GET", f"{url}/v2/health/ready"))[0] == 200


async def test_oversized_body_is_413_after_authentication(repository: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = create_key(state, "ci", "infer")
    settings = settings_for(repository, state, http={"max_body_bytes": 4096})
    async with running(settings) as url, aiohttp.ClientSession() as session:
        big = b"{" + b" " * 10_000 + b"}"
        infer = f"{url}/v2/models/digits/infer"
        assert (await _status(session, "POST", infer, data=big))[0] == 401  # no body read for strangers
        status, _, body = await _status(session, "POST", infer, key, data=big)
        assert status == 413 and "max_body_bytes" in body["error"]
