"""Typed keys for application and request state (``web.AppKey``), in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from appliance.audit import AuditLogSlot
from appliance.config import Settings
from appliance.dataplane.context import RequestContext
from appliance.dataplane.service import InferenceService
from appliance.metrics import Metrics
from appliance.observability import Observability
from appliance.repository import Repository


@dataclass
class ServerState:
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    ready: bool = False


SETTINGS = web.AppKey("settings", Settings)
REPOSITORY = web.AppKey("repository", Repository)
SERVICE = web.AppKey("service", InferenceService)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", ServerState)
OBSERVABILITY = web.AppKey("observability", Observability)
#: The audit log, when the factory opened one (auth failures and admin actions are appended to it).
AUDIT = web.AppKey("audit", AuditLogSlot)
#: Per-request context (request id, principal, deadline...) stored on the request.
CONTEXT = web.RequestKey("context", RequestContext)
__all__ = ["AUDIT", "CONTEXT", "METRICS", "OBSERVABILITY", "REPOSITORY", "SERVICE", "SETTINGS", "STATE",
           "RequestContext", "ServerState"]
