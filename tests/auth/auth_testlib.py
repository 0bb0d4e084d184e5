"""Helpers for the auth tests: certificates and JWTs made here, a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import io
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.app import create_app
from appliance.cli import main
from appliance.config import Settings
from appliance.system.tls import server_ssl_context
from appliance.telemetry import disable_usage_telemetry

disable_usage_telemetry()  # before the tests load models: `import openvino` sends usage data otherwise

ISSUER = "https://idp.example.test/"
AUDIENCE = "model-appliance"
DIGITS_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]}


def settings_for(models: Path, state: Path, **groups: dict[str, Any]) -> Settings:
    settings = Settings().replace("server", models=models, state_dir=state).replace("audit", enabled=False)
    for group, changes in groups.items():
        settings = settings.replace(group, **changes)
    return settings


def create_key(state: Path, name: str, scopes: str, models: str | None = None) -> str:
    """A key made by the real CLI (``appliance keys create``), as an operator would."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["keys", "create", "--name", name, "--scopes", scopes, "--state-dir", str(state),
                     *(["--models", models] if models else [])])
    assert code == 0
    return out.getvalue().strip()


# --- certificates -------------------------------------------------------------------------
@dataclass
class Pki:
    """A CA and certificates it signed, written as PEM files under ``folder``."""

    folder: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, folder: Path, name: str) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        cert = (_builder(subject, subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .sign(key, hashes.SHA256()))
        pki = cls(folder, cert, key)
        (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pki

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def issue(self, common_name: str, *, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(subject, self.ca_cert.subject, key.public_key())
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{common_name}.pem", self.folder / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))


def client_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


# --- JWT ------------------------------------------------------------------------------------
@dataclass
class Idp:
    """An identity provider's signing key and the JWKS file the server reads."""

    key: ec.EllipticCurvePrivateKey
    kid: str
    jwks_file: Path

    @classmethod
    def create(cls, folder: Path, kid: str = "idp-1") -> Idp:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, use="sig", alg="ES256")
        path = folder / "jwks.json"
        path.write_text(json.dumps({"keys": [jwk]}))
        return cls(key, kid, path)

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-batch", "iat": now, "exp": now + 300,
                  "scope": "infer read"}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


def jwt_settings(idp: Idp, **extra: Any) -> dict[str, Any]:
    return {"jwks_file": idp.jwks_file, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, **extra}


# --- a real server --------------------------------------------------------------------------
@asynccontextmanager
async def running(settings: Settings, *, client_ssl: ssl.SSLContext | None = None, health: str = "ready",
                  prepare: Callable[[web.Application], None] | None = None) -> AsyncIterator[str]:
    """``create_app`` behind a real TCP (and TLS, when configured) listener on 127.0.0.1."""
    app = create_app(settings)
    if prepare is not None:
        prepare(app)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.http.keepalive_timeout_s)
    await runner.setup()
    ssl_context = server_ssl_context(settings.tls)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        await wait_ready(url, client_ssl if client_ssl is not None else (False if ssl_context else None), health)
        yield url
    finally:
        await runner.cleanup()


async def wait_ready(url: str, client_ssl: ssl.SSLContext | bool | None, health: str = "ready") -> None:
    connector = aiohttp.TCPConnector(ssl=client_ssl) if client_ssl is not None else None
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(600):
            async with session.get(f"{url}/v2/health/{health}") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} never became ready")
