"""The status page's own sign-in probe, recognised so it is not counted as an error.

Before a user has typed a key, the page asks ``GET /v2/status`` once without credentials to learn
whether the server wants one; with authentication on, the answer is 401. Counted, that single
refusal was the only request in the window and the page opened on "ERRORS 100 %".

The page marks that request with :data:`PROBE_HEADER`. Only the narrowest case goes uncounted: a
401 to a ``GET`` of the status JSON that carries the marker and *no credential at all* (no
``Authorization``, no ``X-API-Key``, no client certificate). A wrong or expired key, a 403, any
other path or a refused inference is counted whatever headers a client sends, so the marker
cannot hide a real failure; the refusal still reaches the auth log and the failure throttle.
"""

from __future__ import annotations

from aiohttp import web

STATUS_JSON = "/v2/status"
PROBE_HEADER = "X-Status-Probe"
_CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")


def is_status_probe(request: web.Request, status: int) -> bool:
    """True for the page's credential-less 401 probe, which the error metrics leave out."""
    if status != 401 or request.method != "GET" or request.path != STATUS_JSON:
        return False
    headers = request.headers
    if PROBE_HEADER not in headers or any(h in headers for h in _CREDENTIAL_HEADERS):
        return False
    transport = request.transport
    return transport is None or not transport.get_extra_info("peercert")
