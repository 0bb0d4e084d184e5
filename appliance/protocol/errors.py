"""The one table from domain errors to HTTP status codes and the protocol's error body."""

from __future__ import annotations

import math
from typing import Any

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


#: OpenAI's error ``type`` per status, for the routes under ``/v1/`` (its clients read ``error.message``).
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout", 413: "invalid_request_error", 429: "rate_limit_error",
                503: "service_unavailable", 504: "timeout"}


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   openai: bool = False) -> web.Response:
    """The protocol's ``{"error": "..."}``; OpenAI's ``{"error": {"message", "type", ...}}`` for ``/v1/``."""
    body: dict[str, Any]
    if openai:
        body = {"error": {"message": message, "type": OPENAI_TYPES.get(status, "server_error"), "param": None,
                          "code": "model_not_found" if status == 404 and "model" in message else None}}
    else:
        body = {"error": message}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def to_response(error: e.ApplianceError, openai: bool = False) -> web.Response:
    status = status_of(error)
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = f'{error.scheme} realm="model-appliance"'
    return error_response(status, error.message, headers, openai)


def from_http_exception(exc: web.HTTPException, openai: bool = False) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large) in the protocol's shape."""
    message = exc.reason or "error"
    if exc.status == 413:
        message = "request body exceeds the configured limit (http.max_body_bytes)"
    elif exc.status == 404:
        message = "not found"
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
    return error_response(exc.status, message, headers, openai)
