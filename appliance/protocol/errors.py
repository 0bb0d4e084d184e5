"""The one table from domain errors to HTTP status codes and the protocol's error body."""

from __future__ import annotations

import math

import orjson
from aiohttp import web

from appliance import errors as e

#: Most specific class first: lookups walk the exception's MRO.
STATUS: dict[type[e.ApplianceError], int] = {
    e.LimitExceeded: 400,
    e.InvalidInput: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.ModelNotFound: 404,
    e.JobNotFound: 404,
    e.RequestTimeout: 408,
    e.PayloadTooLarge: 413,
    e.Overloaded: 429,
    e.InferenceFailed: 500,
    e.ModelNotReady: 503,
    e.ServiceUnavailable: 503,
    e.DeadlineExceeded: 504,
}


def status_of(error: e.ApplianceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}),
                        content_type="application/json", headers=headers)


def to_response(error: e.ApplianceError) -> web.Response:
    status = status_of(error)
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = f'{error.scheme} realm="model-appliance"'
    return error_response(status, error.message, headers)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large) in the protocol's shape."""
    message = exc.reason or "error"
    if exc.status == 413:
        message = "request body exceeds the configured limit (http.max_body_bytes)"
    elif exc.status == 404:
        message = "not found"
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
    return error_response(exc.status, message, headers)
