"""The application factory: the only place where the parts are connected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from appliance.artifacts import SealedArtifactReader
from appliance.auth.guard import Guard
from appliance.auth.middleware import GUARD, guard_middleware
from appliance.cache import PredictionCache
from appliance.config import Settings
from appliance.keys import METRICS, OBSERVABILITY, REPOSITORY, SERVICE, SETTINGS, STATE, ServerState
from appliance.metrics import Metrics
from appliance.observability import Observability, lifecycle
from appliance.protocol.middleware import request_middleware
from appliance.protocol.routes import add_routes
from appliance.repository import Repository
from appliance.service import InferenceService

log = logging.getLogger("appliance")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes,
                          middlewares=[request_middleware, guard_middleware])
    metrics = Metrics()
    repository = Repository(settings, artifact_reader=SealedArtifactReader(settings))
    app[SETTINGS] = settings
    app[GUARD] = Guard(settings)
    app[METRICS] = metrics
    app[REPOSITORY] = repository
    app[STATE] = ServerState()
    app[SERVICE] = InferenceService(settings, repository, metrics,
                                    PredictionCache(settings.cache.max_bytes, settings.cache.ttl_s))
    app[OBSERVABILITY] = Observability.create(settings)
    lifecycle.install(app)
    add_routes(app)
    app.cleanup_ctx.append(_models)
    return app


async def _models(app: web.Application) -> AsyncIterator[None]:
    """Load the repository in a thread after the socket is open, so liveness answers at once
    and readiness turns true when the models are compiled."""
    repository, state = app[REPOSITORY], app[STATE]

    async def load() -> None:
        await asyncio.to_thread(repository.load_all)
        state.ready = True
        log.info("ready", extra={"fields": {"models": [e.name for e in repository.models()]}})

    task = asyncio.create_task(load())
    yield
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(repository.close)
