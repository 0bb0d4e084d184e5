"""Typed keys of the REST application's state (``web.AppKey``) and of a request's (``RequestKey``)."""

from __future__ import annotations

from aiohttp import web

from appliance.audit import AuditSink
from appliance.auth.principal import Principal
from appliance.config import Settings
from appliance.dataplane.context import RequestContext
from appliance.dataplane.service import InferenceService
from appliance.metrics import Metrics
from appliance.observability import Observability
from appliance.parts import Parts, ServerState
from appliance.repository import Repository

PARTS = web.AppKey("parts", Parts)
SETTINGS = web.AppKey("settings", Settings)
REPOSITORY = web.AppKey("repository", Repository)
SERVICE = web.AppKey("service", InferenceService)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", ServerState)
OBSERVABILITY = web.AppKey("observability", Observability)
#: The audit log (a NullAuditLog when audit is off): admin actions are appended to it.
AUDIT: web.AppKey[AuditSink] = web.AppKey("audit")
#: Per-request context (request id, principal, deadline...) stored on the request.
CONTEXT = web.RequestKey("context", RequestContext)
#: Who the guard let in: a route whose model is named in the body (``/v1/embeddings``) checks it there.
PRINCIPAL = web.RequestKey("principal", Principal)
__all__ = ["AUDIT", "CONTEXT", "METRICS", "OBSERVABILITY", "PARTS", "PRINCIPAL", "REPOSITORY", "SERVICE",
           "SETTINGS", "STATE", "RequestContext", "ServerState"]
