"""The one table from domain errors to gRPC status codes, beside REST's HTTP table.

The audit log and the metrics keep the HTTP-equivalent status (``appliance.protocol.errors``)
whichever front end answered, so a refusal reads the same in both. Overload answers carry the
``grpc-retry-pushback-ms`` trailer (gRPC's retry policy honours it) where REST sends Retry-After.
"""

from __future__ import annotations

import math

import grpc

from appliance import errors as e

#: Most specific class first: lookups walk the exception's MRO.
CODES: dict[type[e.ApplianceError], grpc.StatusCode] = {
    e.LimitExceeded: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    e.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    e.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InferenceFailed: grpc.StatusCode.INTERNAL,
    e.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    e.ServiceUnavailable: grpc.StatusCode.UNAVAILABLE,
    e.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

RETRY_PUSHBACK = "grpc-retry-pushback-ms"


def code_of(error: e.ApplianceError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def trailers_of(error: e.ApplianceError) -> tuple[tuple[str, str], ...]:
    """``grpc-retry-pushback-ms`` for refusals that say when to come back (429/503 in REST)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is None:
        return ()
    return ((RETRY_PUSHBACK, str(max(1, math.ceil(retry_after * 1000)))),)
