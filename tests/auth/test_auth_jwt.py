"""JWT bearer tokens validated offline against a JWKS file (real HTTP, real signatures)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import aiohttp
import pytest
from auth_testlib import AUDIENCE, DIGITS_ROW, ISSUER, Idp, jwt_settings, running, settings_for, unsigned_token

from appliance.auth.guard import Guard
from appliance.config import ConfigError


async def _call(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str]:
    async with session.post(f"{url}/v2/models/digits/infer", json=DIGITS_ROW,
                            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, (await response.json()).get("error", "")


async def test_tokens_are_checked(repository: Path, tmp_path: Path) -> None:
    idp = Idp.create(tmp_path)
    for folder in ("other", "third"):
        (tmp_path / folder).mkdir()
    stranger = Idp.create(tmp_path / "other", kid=idp.kid)
    settings = settings_for(repository, tmp_path / "state", auth=jwt_settings(idp, jwt_algorithms=["ES256", "HS256"]))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300, "scope": "infer"}
    hs_with_public_key = unsigned_token({"alg": "HS256", "kid": idp.kid}, claims)
    header_b64, claims_b64, _ = hs_with_public_key.split(".")
    signature = hmac.new(idp.public_pem(), f"{header_b64}.{claims_b64}".encode(), hashlib.sha256).digest()
    hs_with_public_key = f"{header_b64}.{claims_b64}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    async with running(settings) as url, aiohttp.ClientSession() as session:
        assert (await _call(session, url, idp.token()))[0] == 200
        assert (await _call(session, url, idp.token(scope=["infer"])))[0] == 200  # list form
        assert (await _call(session, url, idp.token(scope="infer:digits")))[0] == 200
        assert (await _call(session, url, idp.token(scope="read")))[0] == 403
        assert (await _call(session, url, idp.token(scope="infer:another")))[0] == 403
        refused = {
            "expired": idp.token(exp=now - 120),
            "wrong audience": idp.token(aud="someone-else"),
            "wrong issuer": idp.token(iss="https://evil.example/"),
            "no exp": idp.token(exp=None),
            "alg none": unsigned_token({"alg": "none", "kid": idp.kid}, claims),
            "HS256 keyed with the public key": hs_with_public_key,
            "other signer, same kid": stranger.token(),
            "unknown kid": Idp.create(tmp_path / "third", kid="nope").token(),
            "garbage": "eyJhbGciOi.not.a-token",
        }
        for what, token in refused.items():
            status, error = await _call(session, url, token)
            assert status == 401, f"{what}: {status} {error}"
        assert "expired" in (await _call(session, url, refused["expired"]))[1]


async def test_jwks_rotation_is_picked_up(repository: Path, tmp_path: Path) -> None:
    idp = Idp.create(tmp_path)
    settings = settings_for(repository, tmp_path / "state", auth=jwt_settings(idp))
    token = idp.token()
    async with running(settings) as url, aiohttp.ClientSession() as session:
        assert (await _call(session, url, token))[0] == 200  # now cached
        idp.jwks_file.write_text(json.dumps({"keys": [{**json.loads(idp.jwks_file.read_text())["keys"][0],
                                                       "kid": "rotated"}]}))
        for _ in range(40):
            if (await _call(session, url, token))[0] == 401:
                break
            await asyncio.sleep(0.05)
        assert (await _call(session, url, token))[0] == 401  # the cache died with the key


@pytest.mark.parametrize("algorithms", [["none"], ["ES256", "NONE"], [], ["XX512"]])
def test_unsafe_algorithm_lists_are_refused(tmp_path: Path, algorithms: list[str]) -> None:
    idp = Idp.create(tmp_path)
    settings = settings_for(tmp_path, tmp_path, auth=jwt_settings(idp, jwt_algorithms=algorithms))
    with pytest.raises(ConfigError):
        Guard(settings)


def test_issuer_and_audience_are_required(tmp_path: Path) -> None:
    idp = Idp.create(tmp_path)
    with pytest.raises(ConfigError, match="jwt_issuer"):
        Guard(settings_for(tmp_path, tmp_path, auth={"jwks_file": idp.jwks_file}))
