"""Authentication and authorization on the request path.

::

    guard_middleware (middleware)        authenticate → authorize → rate-limit → bounded body read
        └─ Guard (guard)                 credentials → Principal; required when any credential exists
             ├─ ApiKeyVerifier (apikeys) mak_<id>_<secret>, SHA-256 + compare_digest, store re-read on change
             ├─ JwtVerifier (tokens)     PyJWT, JWKS by kid, alg allow-list fitted to the key type, cache
             ├─ MtlsMapper (mtls)        verified client certificate CN → principal
             ├─ RoutePolicy (policy)     the one table: route → scope
             └─ RateLimiter, FailureThrottle (limits)

``cli`` is ``appliance keys create|list|revoke``. Model artifacts at rest: ``appliance.artifacts``.
"""

from appliance.auth.guard import Guard, auth_required
from appliance.auth.principal import ADMIN, ANONYMOUS, AUDIT, INFER, READ, SCOPES, Principal, parse_scopes

__all__ = ["ADMIN", "ANONYMOUS", "AUDIT", "INFER", "READ", "SCOPES", "Guard", "Principal", "auth_required",
           "parse_scopes"]
