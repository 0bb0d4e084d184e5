"""Authorization: the scope each route needs, in one table.

Routes are matched by the canonical path of their aiohttp resource (``/v2/models/{model}/infer``),
so the table reads like the route table. A route missing from the table needs ``admin``: a new
endpoint is closed until someone decides who may call it. Open: the health endpoints (load
balancers and systemd probe them without credentials) and the status page's static shell.
"""

from __future__ import annotations

import logging

from appliance.auth.principal import ADMIN, AUDIT, INFER, READ

log = logging.getLogger("appliance.auth")

OPEN = ""  # no principal needed

#: canonical path → required scope (OPEN = no principal needed).
ROUTE_SCOPES: dict[str, str] = {
    "/v2/health/live": OPEN,
    "/v2/health/ready": OPEN,
    "/v2": READ,
    "/v2/models/{model}": READ,
    "/v2/models/{model}/ready": READ,
    "/v2/models/{model}/config": READ,
    "/v2/models/{model}/infer": INFER,
    "/v2/models/{model}/versions/{version}": READ,
    "/v2/models/{model}/versions/{version}/ready": READ,
    "/v2/models/{model}/versions/{version}/config": READ,
    "/v2/models/{model}/versions/{version}/infer": INFER,
    "/v2/models/{model}/versions/{version}/lineage": READ,
    "/v2/models/{model}/rollout": ADMIN,
    "/v2/repository/index": READ,
    "/v2/repository/models/{model}/load": ADMIN,
    "/v2/repository/models/{model}/unload": ADMIN,
    # Batch jobs: `infer`, and the handler checks the model named in the body against the principal.
    "/v2/jobs": INFER,
    "/v2/jobs/{job}": INFER,
    "/openapi.json": READ,
    "/v1/embeddings": INFER,  # the model is named in the body: the route checks a per-model limit
    "/metrics": READ,
    # The status page's shell (HTML/JS/CSS, no data) is open so a browser can load it and ask for
    # a key; the data it shows comes from /v2/status, which needs `read`.
    "/": OPEN,
    "/status/{asset}": OPEN,
    "/v2/status": READ,
}

#: Path prefixes for route families (first match wins), checked after the exact table.
PREFIX_SCOPES: tuple[tuple[str, str], ...] = (
    ("/v2/repository/models/", ADMIN),  # Triton-style load/unload
    ("/v2/audit", AUDIT),
    ("/audit", AUDIT),
    ("/admin", ADMIN),
)


class RoutePolicy:
    """Looks up the scope of a route once and remembers it (the hot path is one dict lookup)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = dict(ROUTE_SCOPES)

    def required_scope(self, canonical: str | None) -> str | None:
        """The scope a route needs; ``OPEN`` for health; None when no route matched (the request
        still needs a principal, then gets 404, so strangers cannot map the routes)."""
        if canonical is None:
            return None
        scope = self._known.get(canonical)
        if scope is None:
            scope = self._known[canonical] = _unlisted(canonical)
        return scope


def _unlisted(canonical: str) -> str:
    for prefix, scope in PREFIX_SCOPES:
        if canonical.startswith(prefix):
            return scope
    log.warning("route %s is not in the authorization table: it needs the admin scope", canonical)
    return ADMIN
