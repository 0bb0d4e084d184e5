"""Wiring of observability into an application: collectors, the service observer, and the
background work (hardware description, the status history sampler, OTLP shutdown)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from appliance import appkeys as keys
from appliance.observability.collectors import ScrapeCollector
from appliance.observability.hardware import describe
from appliance.observability.history import take_sample

log = logging.getLogger("appliance.observability")


def audit_log(app: web.Application) -> Any:
    """The audit log when the application has one (the key exists once audit is wired in)."""
    key = getattr(keys, "AUDIT", None)
    return app.get(key) if key is not None else None


def install(app: web.Application) -> None:
    """Register the collectors and the quality observer; called once by ``create_app``."""
    obs, service, state = app[keys.OBSERVABILITY], app[keys.SERVICE], app[keys.STATE]
    registry = app[keys.METRICS].registry
    registry.register(ScrapeCollector(service, app[keys.REPOSITORY], lambda: audit_log(app), lambda: state.ready))
    registry.register(obs.quality)
    if app[keys.SETTINGS].observability.prediction_quality:
        service.add_observer(obs.quality.observe)
    app.cleanup_ctx.append(_background)


async def _background(app: web.Application) -> AsyncIterator[None]:
    obs = app[keys.OBSERVABILITY]
    sampler = asyncio.create_task(_sample_forever(app))
    hardware = asyncio.create_task(asyncio.to_thread(describe))
    hardware.add_done_callback(lambda t: obs.hardware.update(t.result()) if not t.cancelled()
                               and t.exception() is None else None)
    yield
    sampler.cancel()
    await asyncio.gather(sampler, hardware, return_exceptions=True)
    if obs.otel is not None:
        await asyncio.to_thread(obs.otel.shutdown)


async def _sample_forever(app: web.Application) -> None:
    obs, metrics, service = app[keys.OBSERVABILITY], app[keys.METRICS], app[keys.SERVICE]
    while True:
        try:
            obs.history.record(take_sample(metrics, service.admission_stats()))
            obs.quality.versions()  # folds pending rows while the server is otherwise idle
        except Exception:
            log.exception("status sampler failed")
        await asyncio.sleep(obs.history.interval_s)
