"""Mutual TLS: a client certificate the TLS layer verified against ``tls.client_ca_file``.

The handshake already proved the chain (``ssl`` refuses a certificate from another CA before
any HTTP is read), so here we only map the verified subject to a principal: its common name
is the principal's name, its scopes are ``auth.mtls_scopes``. ``auth.mtls_subjects``, when not
empty, lists the common names allowed in (a CA that signs more than this service's clients).
"""

from __future__ import annotations

from typing import Any

from appliance.auth.principal import Principal, parse_scopes
from appliance.config import AuthSettings
from appliance.errors import Unauthenticated


def common_name(peercert: dict[str, Any]) -> str | None:
    """The subject CN of ``SSLSocket.getpeercert()``'s dict (None when absent)."""
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class MtlsMapper:
    def __init__(self, settings: AuthSettings) -> None:
        self._scopes, self._models = parse_scopes(settings.mtls_scopes)
        self._allowed = frozenset(settings.mtls_subjects)
        self._principals: dict[str, Principal] = {}

    def principal(self, peercert: dict[str, Any] | None) -> Principal | None:
        """The certificate's principal; None without a verified certificate."""
        if not peercert:
            return None
        name = common_name(peercert)
        if not name or (self._allowed and name not in self._allowed):
            raise Unauthenticated(f"client certificate subject {name!r} is not allowed")
        found = self._principals.get(name)
        if found is None:
            if len(self._principals) > 4096:
                self._principals.clear()
            found = self._principals[name] = Principal(name, self._scopes, self._models, "mtls")
        return found
