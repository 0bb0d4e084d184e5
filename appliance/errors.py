"""Domain errors of the request path. They know nothing of HTTP.

::

    ApplianceError
    ├── InvalidInput            malformed request, unknown/missing tensor, bad shape or datatype
    │   └── LimitExceeded       a tensor or batch over the configured limits
    ├── PayloadTooLarge         body over ``http.max_body_bytes``
    ├── RequestTimeout          the body did not arrive within ``http.read_timeout_s``
    ├── ModelNotFound           unknown model or version
    ├── JobNotFound             unknown batch job (or the jobs API is off)
    ├── ModelNotReady           known, but not loaded (hash mismatch, load failure, draining)
    ├── Unauthenticated         no or bad credentials
    ├── Forbidden               authenticated, but the scope is missing
    ├── Overloaded              admission refused: queue or rate full (carries ``retry_after``)
    ├── ServiceUnavailable      the server is draining or a dependency is down
    ├── DeadlineExceeded        the request's deadline passed before inference
    └── InferenceFailed         the runtime raised while running a batch

``appliance.protocol.errors`` maps each class to a status code and the protocol's
``{"error": "..."}`` body, in one table.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error a client may see. ``str(error)`` is the message sent to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ApplianceError):
    pass


class LimitExceeded(InvalidInput):
    pass


class PayloadTooLarge(ApplianceError):
    pass


class RequestTimeout(ApplianceError):
    pass


class ModelNotFound(ApplianceError):
    pass


class JobNotFound(ApplianceError):
    pass


class ModelNotReady(ApplianceError):
    pass


class Unauthenticated(ApplianceError):
    def __init__(self, message: str = "authentication required", *, scheme: str = "Bearer") -> None:
        super().__init__(message)
        self.scheme = scheme


class Forbidden(ApplianceError):
    pass


class Overloaded(ApplianceError):
    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(ApplianceError):
    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ApplianceError):
    pass


class InferenceFailed(ApplianceError):
    pass
