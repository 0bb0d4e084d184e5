"""JWT bearer tokens (OAuth2 access tokens from the site's identity provider), checked offline.

PyJWT does the cryptography and the registered-claim checks; this module decides *which* key and
algorithm may be used, because that is where JWT validation usually goes wrong:

* the algorithm must be in ``auth.jwt_algorithms`` (``none`` is refused when the settings are
  read) and must fit the key's type: an RSA/EC/OKP key is never used as an HMAC secret, an
  HMAC (``oct``) key only for HS* algorithms;
* the key is found by ``kid`` in the JWKS file (re-read when it changes); a token without
  ``kid`` is accepted only when the set holds exactly one key;
* ``iss``, ``aud`` and ``exp`` are required and checked.

Valid tokens are cached (bounded, LRU) until they expire, so a client reusing its access token
pays one dict lookup per request instead of a signature check.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt

from appliance.auth.principal import Principal, parse_scopes
from appliance.config import AuthSettings, ConfigError
from appliance.errors import Unauthenticated
from appliance.system.watchedfile import WatchedFile

_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}
_CACHE_SIZE = 1024  # header fields are ≤ 8 KiB: at most ~8 MiB of cached tokens
_LEEWAY_S = 30


def _family(alg: str) -> str | None:
    return _FAMILIES.get(alg[:2])


def check_algorithms(algorithms: list[str]) -> frozenset[str]:
    """The allow-list, refusing ``none`` and names PyJWT does not know."""
    known = set(jwt.algorithms.get_default_algorithms())
    allowed = frozenset(algorithms)
    bad = [a for a in allowed if a.lower() == "none" or a not in known or _family(a) is None]
    if bad or not allowed:
        raise ConfigError(f"auth.jwt_algorithms: {', '.join(bad) or 'empty'} not allowed "
                          f"(choose from RS*, PS*, ES*, EdDSA, HS*)")
    return allowed


def parse_jwks(data: bytes) -> dict[str, dict[str, Any]]:
    doc = json.loads(data)
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError("a JWKS file holds {\"keys\": [...]} with at least one key")
    return {str(k.get("kid", "")): k for k in keys if isinstance(k, dict) and k.get("kty")}


class JwtVerifier:
    def __init__(self, settings: AuthSettings, jwks_file: Path, interval: float = 1.0) -> None:
        if not settings.jwt_issuer or not settings.jwt_audience:
            raise ConfigError("auth.jwks_file needs auth.jwt_issuer and auth.jwt_audience")
        self._algorithms = check_algorithms(settings.jwt_algorithms)
        self._issuer, self._audience = settings.jwt_issuer, settings.jwt_audience
        self._claim = settings.jwt_scope_claim
        self._jwks: WatchedFile[dict[str, dict[str, Any]]] = WatchedFile(jwks_file, parse_jwks, {}, interval)
        self._jwks.reload()
        self._seen_jwks: object = None
        self._keys: dict[tuple[str, str], Any] = {}
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        jwks = self._jwks.current()
        if jwks is not self._seen_jwks:  # keys changed: forget keys and every cached token
            self._seen_jwks, self._keys = jwks, {}
            self._cache.clear()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            self._cache.move_to_end(token)
            return cached[0]
        principal, expires = self._validate(token, jwks)
        self._cache[token] = (principal, expires)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _validate(self, token: str, jwks: dict[str, dict[str, Any]]) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            alg = str(header.get("alg", ""))
            if alg not in self._algorithms:
                raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
            key = self._key(jwks, str(header.get("kid", "")), alg)
            claims = jwt.decode(token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                                leeway=_LEEWAY_S, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return self._principal(claims), float(claims["exp"])

    def _key(self, jwks: dict[str, dict[str, Any]], kid: str, alg: str) -> Any:
        if not kid and len(jwks) == 1:
            kid = next(iter(jwks))
        jwk = jwks.get(kid)
        if jwk is None:
            raise Unauthenticated("token signed with an unknown key (kid)")
        if jwk.get("kty") != _family(alg) or jwk.get("alg", alg) != alg:
            raise Unauthenticated(f"token algorithm {alg} does not fit key {kid!r} ({jwk.get('kty')})")
        cached = self._keys.get((kid, alg))
        if cached is None:
            cached = self._keys[(kid, alg)] = jwt.PyJWK(jwk, algorithm=alg).key
        return cached

    def _principal(self, claims: dict[str, Any]) -> Principal:
        name = claims.get("sub") or claims.get("client_id") or claims.get("azp")
        if not isinstance(name, str) or not name:
            raise Unauthenticated("token names no subject (sub)")
        raw = claims.get(self._claim, "")
        if not isinstance(raw, str | list):
            raise Unauthenticated(f"token claim {self._claim!r} must be a string or a list")
        scopes, models = parse_scopes(raw, strict=False)
        return Principal(name, scopes, models, "jwt")
