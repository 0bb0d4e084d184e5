"""The one middleware of the request path: request id, trace context, error mapping, request log line.

Kept as a single middleware on purpose: each aiohttp middleware layer costs a coroutine call
per request, and these concerns share the same try/finally. The request log carries ids, model,
status and timings — never payloads, headers or credentials.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.appkeys import CONTEXT, METRICS, OBSERVABILITY, SERVICE, SETTINGS
from appliance.dataplane.context import RequestContext
from appliance.errors import ApplianceError
from appliance.logs import RequestLog
from appliance.observability import tracing
from appliance.protocol.drain import close_when_draining
from appliance.protocol.errors import from_http_exception, status_of, to_response
from appliance.protocol.probe import is_status_probe

log = logging.getLogger("appliance.request")
request_log = RequestLog(log)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID_MAX = 128


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    if given and len(given) <= _REQUEST_ID_MAX and given.isprintable():
        return given
    # 128 random bits like uuid4, but from the process's PRNG: uuid4's os.urandom() releases the
    # GIL, and under load the loop then waits for a worker thread to hand it back (~35 µs).
    # Request ids must be unique, not secret.
    return f"{random.getrandbits(128):032x}"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    otel = request.app[OBSERVABILITY].otel
    trace = tracing.begin(request.headers.get("traceparent"), request.headers.get("tracestate"),
                          sampled=otel is not None)
    span = otel.start(trace, _span_name(request), {"http.request.method": request.method}) if otel else None
    ctx = RequestContext(request_id=_request_id(request), client=request.remote or "", trace_id=trace.trace_id,
                         operation=f"{request.method} {request.path}")
    request[CONTEXT] = ctx
    status = 500
    openai = request.path.startswith("/v1/")  # OpenAI-compatible routes answer errors in OpenAI's shape
    try:
        response = await handler(request)
        status = response.status
    except ApplianceError as error:
        status = status_of(error)
        if not is_status_probe(request, status):  # the status page's sign-in probe is not a failure
            await request.app[SERVICE].refuse(ctx, error, status)  # metrics, audit, 429 pacing: one door
        response = to_response(error, openai)
    except web.HTTPException as exc:
        status = exc.status
        response = from_http_exception(exc, openai)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = to_response(ApplianceError("internal server error"), openai)
    headers = response.headers
    close_when_draining(request, response)
    headers["Server"] = "model-appliance"  # not aiohttp's default, which names Python's and aiohttp's versions
    headers["X-Request-ID"] = ctx.request_id
    headers["traceparent"] = trace.traceparent
    if trace.tracestate:
        headers["tracestate"] = trace.tracestate
    _count_http_error(request, status)
    if span is not None:
        otel.finish(span, status, {"appliance.model": ctx.model, "appliance.version": ctx.version,
                                   "appliance.request_id": ctx.request_id})
    # Inference requests only (resolved, or refused before resolution): not probes or metadata.
    # Load shedding (429) is counted in the metrics and tallied in the audit log, not logged per
    # request: a line per refusal would spend the core a flood already strains.
    model = ctx.model or (request.match_info.get("model", "") if request.method == "POST" else "")
    if model and status != 429 and request.app[SETTINGS].observability.request_log and request_log.enabled():
        _log_request(ctx, status, model)
    return response


def _count_http_error(request: web.Request, status: int) -> None:
    """Every error response (>= 400) but the status page's sign-in probe (``protocol.probe``)."""
    if status >= 400 and not is_status_probe(request, status):
        request.app[METRICS].count_http_error(status)


def _span_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


def _log_request(ctx: RequestContext, status: int, model: str) -> None:
    request_log.write({
        "request_id": ctx.request_id, "trace_id": ctx.trace_id, "principal": ctx.principal,
        "model": model, "version": ctx.version, "protocol": ctx.protocol, "status": status,
        "batch_size": ctx.batch_size, "cache_hit": ctx.cache_hit,
        "latency_ms": round((time.monotonic() - ctx.started) * 1000, 3),
    })
