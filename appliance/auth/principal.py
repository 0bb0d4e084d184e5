"""Who is asking (a principal) and what they may do (scopes).

Scopes are few and coarse on purpose: ``infer`` (optionally limited to some models), ``read``
(metadata, status, metrics, the status page, the OpenAPI document), ``admin`` (load/unload,
configuration) and ``audit`` (export the audit log). Every credential kind (API key, JWT,
client certificate) ends as the same :class:`Principal`, so authorization is decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

INFER = "infer"
READ = "read"
ADMIN = "admin"
AUDIT = "audit"
SCOPES = (INFER, READ, ADMIN, AUDIT)

Via = Literal["api-key", "jwt", "mtls", "anonymous"]


class ScopeError(ValueError):
    """A scope list names something that is not a scope."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``models`` limits every model-addressed route (None = all models)."""

    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None
    via: Via = "anonymous"

    def may(self, scope: str, model: str | None = None) -> bool:
        if scope not in self.scopes:
            return False
        return model is None or self.models is None or model in self.models


#: The principal of a server running without authentication (loopback developer server).
ANONYMOUS = Principal("anonymous", frozenset(SCOPES), None, "anonymous")


def parse_scopes(raw: str | Iterable[str], *, strict: bool = True) -> tuple[frozenset[str], frozenset[str] | None]:
    """Scopes from a comma/space separated string or a list.

    ``infer:NAME`` grants ``infer`` limited to model NAME (how a token can carry a model limit).
    ``strict`` raises on an unknown scope (CLI, config); tokens use ``strict=False`` and ignore
    scopes meant for other services.
    """
    items = raw.replace(",", " ").split() if isinstance(raw, str) else [str(s) for s in raw]
    scopes: set[str] = set()
    models: set[str] = set()
    for item in items:
        scope, _, model = item.partition(":")
        if scope not in SCOPES:
            if strict:
                raise ScopeError(f"unknown scope {item!r}; expected some of {', '.join(SCOPES)}")
            continue
        scopes.add(scope)
        if model:
            models.add(model)
    return frozenset(scopes), (frozenset(models) if models else None)
