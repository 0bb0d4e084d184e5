"""The one middleware of the request path: request id, error mapping, request log line.

Kept as a single middleware on purpose: each aiohttp middleware layer costs a coroutine call
per request, and these three concerns share the same try/finally.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.errors import ApplianceError
from appliance.keys import CONTEXT, SERVICE, SETTINGS
from appliance.protocol.errors import from_http_exception, status_of, to_response
from appliance.service import RequestContext

log = logging.getLogger("appliance.request")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID_MAX = 128


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    if given and len(given) <= _REQUEST_ID_MAX and given.isprintable():
        return given
    return uuid.uuid4().hex


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = RequestContext(request_id=_request_id(request), client=request.remote or "")
    request[CONTEXT] = ctx
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except ApplianceError as error:
        status = status_of(error)
        await request.app[SERVICE].record_failure(ctx, status, error)
        response = to_response(error)
    except web.HTTPException as exc:
        status = exc.status
        response = from_http_exception(exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = to_response(ApplianceError("internal server error"))
    response.headers["X-Request-ID"] = ctx.request_id
    if ctx.model and request.app[SETTINGS].observability.request_log and log.isEnabledFor(logging.INFO):
        log.info("request", extra={"fields": {
            "request_id": ctx.request_id, "principal": ctx.principal, "model": ctx.model,
            "version": ctx.version, "status": status, "batch_size": ctx.batch_size,
            "cache_hit": ctx.cache_hit, "latency_ms": round((time.monotonic() - ctx.started) * 1000, 3),
        }})
    return response
