"""The guard on the request path: authenticate → authorize → rate-limit.

Placed *inside* ``request_middleware`` so its domain errors are mapped to HTTP by the one error
table (401 + ``WWW-Authenticate``, 403, 429 + ``Retry-After``). One middleware for the three
steps because each aiohttp middleware layer costs a coroutine call per request; with an API key
the whole check is a dict lookup, one SHA-256 and one ``hmac.compare_digest``.

Handlers read the body only after the guard let the request through (``protocol.routes.read_body``,
bounded by ``http.read_timeout_s``): a stranger cannot make the server buffer a body, and a slow
client cannot hold a request open (headers are bounded by aiohttp's keep-alive timer, which closes
a connection still waiting for a complete request after ``http.keepalive_timeout_s``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.appkeys import CONTEXT, PRINCIPAL
from appliance.auth.guard import Guard
from appliance.auth.policy import OPEN
from appliance.auth.principal import Principal
from appliance.dataplane.context import RequestContext
from appliance.errors import Forbidden, Overloaded, Unauthenticated

log = logging.getLogger("appliance.auth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GUARD = web.AppKey("guard", Guard)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    resource = request.match_info.route.resource
    scope = guard.policy.required_scope(resource.canonical if resource is not None else None)
    if scope == OPEN:
        return await handler(request)
    ctx: RequestContext = request[CONTEXT]
    principal = _authenticate(request, guard, ctx)
    model = request.match_info.get("model")
    if scope is not None and not principal.may(scope, model):
        detail = f"'{principal.name}' lacks the '{scope}' scope" + (f" for model '{model}'" if model else "")
        ctx.principal = principal.name
        _log_failure(request, ctx, 403, detail)
        raise Forbidden(detail)
    ctx.principal = principal.name
    request[PRINCIPAL] = principal
    if guard.rate.enabled:
        wait = guard.rate.take(principal.name if principal.via != "anonymous" else f"anonymous@{ctx.client}")
        if wait:
            raise Overloaded(f"rate limit of {guard.rate.rate:g} requests/s for '{principal.name}' reached",
                             retry_after=wait)
    return await handler(request)


def _authenticate(request: web.Request, guard: Guard, ctx: RequestContext) -> Principal:
    if not guard.required:
        return guard.authenticate(None, None, None)
    wait = guard.throttle.blocked_for(ctx.client)
    if wait:
        raise Overloaded("too many authentication failures from this address", retry_after=wait)
    headers = request.headers
    peercert = None
    if guard.mtls is not None and request.transport is not None:
        peercert = request.transport.get_extra_info("peercert")
    try:
        return guard.authenticate(headers.get("Authorization"), headers.get("X-API-Key"), peercert)
    except Unauthenticated as failure:
        guard.throttle.failed(ctx.client)
        ctx.principal = ""
        _log_failure(request, ctx, 401, failure.message)
        raise


def _log_failure(request: web.Request, ctx: RequestContext, status: int, detail: str) -> None:
    """The log line; the audit record is written by the service's one door for refusals, which
    the request middleware calls with the error raised here."""
    log.warning("auth failure", extra={"fields": {"client": ctx.client, "principal": ctx.principal,
                                                  "status": status, "path": request.path, "detail": detail}})
