"""The REST application factory: the protocol-free parts (``build_parts``) behind aiohttp routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from appliance.appkeys import AUDIT, METRICS, OBSERVABILITY, PARTS, REPOSITORY, SERVICE, SETTINGS, STATE
from appliance.config import Settings
from appliance.parts import Parts, build_parts
from appliance.protocol.guard import GUARD, guard_middleware
from appliance.protocol.middleware import request_middleware
from appliance.protocol.routes import add_routes


def create_app(settings: Settings, parts: Parts | None = None) -> web.Application:
    """The REST front end over ``parts`` (built here from ``settings`` unless given)."""
    parts = parts if parts is not None else build_parts(settings)
    app = web.Application(client_max_size=settings.http.max_body_bytes,
                          middlewares=[request_middleware, guard_middleware])
    app[PARTS] = parts
    app[SETTINGS] = parts.settings
    app[AUDIT] = parts.audit_log
    app[GUARD] = parts.guard
    app[METRICS] = parts.metrics
    app[REPOSITORY] = parts.repository
    app[STATE] = parts.state
    app[SERVICE] = parts.service
    app[OBSERVABILITY] = parts.observability
    add_routes(app)
    app.cleanup_ctx.append(_parts)
    return app


async def _parts(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    await parts.start()
    yield
    await parts.aclose()
