"""The guard: turns a request's credentials into a principal, decides, throttles.

Built once by the application factory from the settings; the middleware calls it. Nothing here
imports the web framework, so the same guard can serve a gRPC front later.

Authentication is **on** when ``auth.enabled`` is true *or* any credential is configured (an
API key in the store, a JWKS file, a client CA): once credentials exist they are required, as
Redis' ``requirepass`` does. Off, every caller is the anonymous principal with every scope,
which ``appliance serve`` allows only on a loopback address (see ``check_protected_mode``).
"""

from __future__ import annotations

from typing import Any

from appliance.auth.apikeys import PREFIX, ApiKeyVerifier, store_path
from appliance.auth.limits import FailureThrottle, RateLimiter
from appliance.auth.mtls import MtlsMapper
from appliance.auth.policy import RoutePolicy
from appliance.auth.principal import ANONYMOUS, Principal
from appliance.auth.tokens import JwtVerifier
from appliance.config import Settings
from appliance.errors import Unauthenticated


class Guard:
    def __init__(self, settings: Settings, *, reload_interval: float = 1.0, share: int = 1) -> None:
        """``share``: the server's worker processes. Each holds 1/share of the rate and failure
        budgets, so the server as a whole never allows more than configured (a client on one
        keep-alive connection, which reaches one worker, may get less: the safe side)."""
        auth = settings.auth
        limits = settings.limits
        self.policy = RoutePolicy()
        self.api_keys = ApiKeyVerifier(store_path(settings), reload_interval)
        self.jwt = JwtVerifier(auth, auth.jwks_file, reload_interval) if auth.jwks_file else None
        self.mtls = MtlsMapper(auth) if settings.tls.client_ca_file else None
        self.rate = RateLimiter(limits.rate_limit_rps / share, -(-limits.rate_limit_burst // share))
        self.throttle = FailureThrottle(-(-auth.failure_limit_per_minute // share))
        self._always = auth.enabled or self.jwt is not None or self.mtls is not None

    @property
    def required(self) -> bool:
        """Whether requests need a principal (re-evaluated as keys are created or revoked)."""
        return self._always or self.api_keys.has_keys()

    def authenticate(self, authorization: str | None, api_key: str | None,
                     peercert: dict[str, Any] | None) -> Principal:
        """The caller's principal, or :class:`Unauthenticated`. An explicit credential that fails
        is a failure even when a valid client certificate came with it."""
        if not self.required:
            return ANONYMOUS
        token = api_key or _bearer(authorization)
        if token:
            if token.startswith(PREFIX):
                principal = self.api_keys.verify(token)
                if principal is None:
                    raise Unauthenticated("invalid API key")
                return principal
            if self.jwt is not None:
                return self.jwt.verify(token)
            raise Unauthenticated("invalid credentials")
        if self.mtls is not None:
            principal = self.mtls.principal(peercert)
            if principal is not None:
                return principal
        raise Unauthenticated("authentication required")


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("use 'Authorization: Bearer <API key or token>' or 'X-API-Key: <key>'")
    return value.strip()


def auth_required(settings: Settings) -> bool:
    """For protected mode at startup: would this configuration demand credentials?"""
    return Guard(settings).required
