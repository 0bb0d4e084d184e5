"""TLS and mutual TLS with certificates made here; real handshakes on 127.0.0.1. Protected mode."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from auth_testlib import DIGITS_ROW, Pki, client_context, create_key, running, settings_for

from appliance.commands.serve import check_protected_mode
from appliance.config import ConfigError


@pytest.fixture
def pkis(tmp_path: Path) -> tuple[Pki, Pki]:
    return Pki.create(tmp_path / "site", "site"), Pki.create(tmp_path / "rogue", "rogue")


def _tls(pki: Pki, **extra: object) -> dict[str, object]:
    cert, key = pki.issue("localhost", server=True)
    return {"cert_file": cert, "key_file": key, "client_ca_file": pki.ca_file, **extra}


async def _infer(url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.post(f"{url}/v2/models/digits/infer", json=DIGITS_ROW, headers=headers) as response:
        return response.status


async def test_mutual_tls_principals(repository: Path, tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    site, rogue = pkis
    state = tmp_path / "state"
    key = create_key(state, "ci", "infer")
    alice, mallory, eve = site.issue("alice"), rogue.issue("mallory"), site.issue("eve")
    settings = settings_for(repository, state, tls=_tls(site), auth={"mtls_subjects": ["alice"]})
    async with running(settings) as url:
        assert url.startswith("https://")
        assert await _infer(url, client_context(site.ca_file, alice)) == 200
        assert await _infer(url, client_context(site.ca_file)) == 401  # no certificate, no key
        assert await _infer(url, client_context(site.ca_file), {"X-API-Key": key}) == 200
        assert await _infer(url, client_context(site.ca_file, eve)) == 401  # CA ok, subject not allowed
        with pytest.raises(aiohttp.ClientError):  # another CA: the handshake itself fails
            await _infer(url, client_context(site.ca_file, mallory))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the client checks the server too
            await _infer(url, client_context(rogue.ca_file, alice))


async def test_required_client_certificate(repository: Path, tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    site, rogue = pkis
    alice = site.issue("alice")
    settings = settings_for(repository, tmp_path / "state", tls=_tls(site, require_client_cert=True),
                            auth={"mtls_scopes": ["read"]})
    async with running(settings, client_ssl=client_context(site.ca_file, alice)) as url:
        with pytest.raises(aiohttp.ClientError):
            await _infer(url, client_context(site.ca_file))
        with pytest.raises(aiohttp.ClientError):
            await _infer(url, client_context(site.ca_file, rogue.issue("mallory")))
        assert await _infer(url, client_context(site.ca_file, alice)) == 403  # read only


def test_protected_mode(tmp_path: Path, pkis: tuple[Pki, Pki]) -> None:
    state = tmp_path / "state"
    open_lan = settings_for(tmp_path, state).replace("server", host="0.0.0.0")
    with pytest.raises(ConfigError, match="--insecure"):
        check_protected_mode(open_lan)
    check_protected_mode(open_lan.replace("server", insecure=True))
    check_protected_mode(open_lan.replace("server", host="127.0.0.1"))
    check_protected_mode(open_lan.replace("auth", enabled=True))
    check_protected_mode(open_lan.replace("tls", **_tls(pkis[0])))  # client CA = credentials
    create_key(state, "ops", "admin")
    check_protected_mode(open_lan)  # an API key exists: authentication is on
