"""The application factory: the only place where the parts are connected."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from appliance import __version__
from appliance.appkeys import AUDIT, METRICS, OBSERVABILITY, REPOSITORY, SERVICE, SETTINGS, STATE, ServerState
from appliance.artifacts import SealedArtifactReader
from appliance.audit import AuditLogSlot, AuditRecord, open_audit_log, upkeep
from appliance.audit.requests import InferenceAuditor
from appliance.auth.guard import Guard
from appliance.config import Settings
from appliance.dataplane.cache import PredictionCache
from appliance.dataplane.service import InferenceService
from appliance.metrics import Metrics
from appliance.observability import Observability, lifecycle
from appliance.protocol.guard import GUARD, guard_middleware
from appliance.protocol.middleware import request_middleware
from appliance.protocol.routes import add_routes
from appliance.repository import Repository

log = logging.getLogger("appliance")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes,
                          middlewares=[request_middleware, guard_middleware])
    metrics = Metrics()
    repository = Repository(settings, artifact_reader=SealedArtifactReader(settings))
    app[SETTINGS] = settings
    app[AUDIT] = AuditLogSlot()
    app[GUARD] = Guard(settings)
    app[METRICS] = metrics
    app[REPOSITORY] = repository
    app[STATE] = ServerState()
    app[SERVICE] = InferenceService(settings, repository, metrics,
                                    PredictionCache(settings.cache.max_bytes, settings.cache.ttl_s))
    app[OBSERVABILITY] = Observability.create(settings)
    lifecycle.install(app)
    add_routes(app)
    app.cleanup_ctx.append(_audit)
    app.cleanup_ctx.append(_models)
    return app


async def _audit(app: web.Application) -> AsyncIterator[None]:
    """Open the audit log before serving (a missing or wrong key stops start-up with
    AuditKeyError); close it last, after the drain, so every answered request is on disk."""
    audit_log = await asyncio.to_thread(open_audit_log, app[SETTINGS])
    app[AUDIT].target = audit_log
    if app[SETTINGS].audit.enabled:
        app[SERVICE].audit = InferenceAuditor(audit_log, lambda: app[SERVICE].active)
    # The effective configuration's digest: a change between two starts is visible in the log.
    audit_log.append_nowait(AuditRecord("server_start", status=200, detail=f"model-appliance {__version__}; "
                                        f"config sha256 {settings_digest(app[SETTINGS])}"))
    retention = await upkeep.start(app[SETTINGS], audit_log)  # retention and capacity, in a thread
    yield
    await upkeep.stop(retention)
    auditor, app[SERVICE].audit = app[SERVICE].audit, None
    if isinstance(auditor, InferenceAuditor):
        auditor.flush_overloads()
    audit_log.append_nowait(AuditRecord("server_stop", status=200))
    await audit_log.aclose()


async def _models(app: web.Application) -> AsyncIterator[None]:
    """Load the repository in a thread after the socket is open, so liveness answers at once
    and readiness turns true when the models are compiled."""
    repository, state = app[REPOSITORY], app[STATE]

    async def load() -> None:
        await asyncio.to_thread(repository.load_all)
        _audit_models(app, "model_load")
        state.ready = True
        log.info("ready", extra={"fields": {"models": [e.name for e in repository.models()]}})

    task = asyncio.create_task(load())
    yield
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(repository.close)
    _audit_models(app, "model_unload")



def _audit_models(app: web.Application, action: str) -> None:
    for entry in app[REPOSITORY].models():
        for number, version in entry.versions.items():
            app[AUDIT].append_nowait(AuditRecord(
                action=action, model=entry.name, version=str(number), status=200 if version.ready else 503,
                device=version.compiled.device if version.compiled else "", detail=version.reason,
                latency_ms=version.load_seconds * 1000 if action == "model_load" else 0.0))


def settings_digest(settings: Settings) -> str:
    """SHA-256 of the effective settings (paths and limits only: secrets live in key files)."""
    return hashlib.sha256(orjson.dumps(dataclasses.asdict(settings), default=str,
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()
