"""Who is calling, and may they: the REST guard's steps for each gRPC call, with the same
:class:`~appliance.auth.guard.Guard` (API keys, JWTs, client certificates, the failure throttle,
the per-principal rate) and the same scope table.

Credentials come from the call's metadata: ``authorization: Bearer <key or token>`` or
``x-api-key: <key>``, or from the client certificate gRPC verified during the handshake. Each RPC
needs the scope of its REST twin (``ROUTES``), looked up in ``appliance.auth.policy``'s one table,
so the two front ends cannot disagree about who may do what. Done inside each handler rather than
in an interceptor: a grpc.aio interceptor costs every call another coroutine, and the handler
needs the model name from the request message anyway.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import unquote

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.auth.guard import Guard
from appliance.auth.policy import OPEN
from appliance.auth.principal import Principal
from appliance.dataplane.context import RequestContext
from appliance.errors import Forbidden, Overloaded, Unauthenticated

log = logging.getLogger("appliance.auth")

#: RPC → the REST route whose scope it needs.
ROUTES: dict[str, str] = {
    "ServerLive": "/v2/health/live",
    "ServerReady": "/v2/health/ready",
    "ServerMetadata": "/v2",
    "ModelReady": "/v2/models/{model}/ready",
    "ModelMetadata": "/v2/models/{model}",
    "ModelConfig": "/v2/models/{model}/config",
    "ModelStatistics": "/v2/models/{model}",  # no REST twin: what model metadata needs (read)
    "ModelInfer": "/v2/models/{model}/infer",
    "ModelStreamInfer": "/v2/models/{model}/infer",
    "RepositoryIndex": "/v2/repository/index",
    "RepositoryModelLoad": "/v2/repository/models/{model}/load",
    "RepositoryModelUnload": "/v2/repository/models/{model}/unload",
}


class CallGuard:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.scopes = {rpc: guard.policy.required_scope(route) or "" for rpc, route in ROUTES.items()}

    def check(self, context: grpc.aio.ServicerContext, ctx: RequestContext, rpc: str, model: str | None) -> None:
        """Authenticate, authorize and rate-limit one call (nothing for the open health RPCs)."""
        if self.scopes[rpc] == OPEN:
            return
        self.authorize(self.authenticate(context, ctx), ctx, rpc, model)

    def authenticate(self, context: grpc.aio.ServicerContext, ctx: RequestContext) -> Principal:
        guard = self.guard
        if not guard.required:
            return guard.authenticate(None, None, None)
        wait = guard.throttle.blocked_for(ctx.client)
        if wait:
            raise Overloaded("too many authentication failures from this address", retry_after=wait)
        authorization = api_key = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = str(value)
            elif key == "x-api-key":
                api_key = str(value)
        try:
            principal = guard.authenticate(authorization, api_key, self._peercert(context))
        except Unauthenticated as failure:
            guard.throttle.failed(ctx.client)
            ctx.principal = ""
            _log_failure(ctx, 401, failure.message)
            raise
        ctx.principal = principal.name
        return principal

    def authorize(self, principal: Principal, ctx: RequestContext, rpc: str, model: str | None) -> None:
        scope = self.scopes[rpc]
        ctx.principal = principal.name
        if not principal.may(scope, model or None):
            detail = f"'{principal.name}' lacks the '{scope}' scope" + (f" for model '{model}'" if model else "")
            _log_failure(ctx, 403, detail)
            raise Forbidden(detail)
        rate = self.guard.rate
        if rate.enabled:
            wait = rate.take(principal.name if principal.via != "anonymous" else f"anonymous@{ctx.client}")
            if wait:
                raise Overloaded(f"rate limit of {rate.rate:g} requests/s for '{principal.name}' reached",
                                 retry_after=wait)

    def _peercert(self, context: grpc.aio.ServicerContext) -> dict[str, Any] | None:
        """The verified client certificate's subject, shaped like ``SSLSocket.getpeercert()``.

        gRPC asks for a client certificate only when ``tls.require_client_cert`` is on (its Python
        API cannot request an optional one and still verify it), and then verifies it against
        ``tls.client_ca_file`` before the call is dispatched."""
        if self.guard.mtls is None:
            return None
        pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
        return _subject(pem) if pem else None


@functools.lru_cache(maxsize=256)
def _subject(pem: bytes) -> dict[str, Any]:
    names = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {"subject": tuple((("commonName", str(n.value)),) for n in names)}


def client_address(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` / ``ipv6:%5B::1%5D:5555`` → the address (the throttle's and audit's key)."""
    _, _, rest = unquote(peer).partition(":")
    host, _, _ = rest.rpartition(":")
    return host.strip("[]") or rest


def _log_failure(ctx: RequestContext, status: int, detail: str) -> None:
    """The log line; the audit record is written by the service's one door for refusals."""
    log.warning("auth failure", extra={"fields": {"client": ctx.client, "principal": ctx.principal, "status": status,
                                                  "path": ctx.operation, "detail": detail}})
