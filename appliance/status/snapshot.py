"""The status document behind the built-in page (``GET /v2/status``): one JSON object with health,
hardware, models, traffic history, audit health and prediction quality."""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import psutil
from aiohttp import web

from appliance import __version__
from appliance import appkeys as keys
from appliance.observability.collectors import audit_snapshot
from appliance.observability.history import Sample
from appliance.repository import ModelEntry


def build(app: web.Application) -> dict[str, Any]:
    parts = app[keys.PARTS]
    obs, service, state, repository = parts.observability, parts.service, parts.state, parts.repository
    latest = obs.history.latest()
    rates = obs.history.version_rates()
    all_ready = state.ready and repository.all_ready()
    health = "draining" if service.draining else "starting" if not state.ready else "ok" if all_ready else "degraded"
    audit = audit_snapshot(parts.audit_log)
    if audit.get("ready") is False:  # strict audit cannot commit: readiness is 503 (reason in "audit")
        health = "unavailable"
    cache = service.cache
    memory = psutil.virtual_memory()
    return {
        "pid": os.getpid(),
        "server": {"name": "model-appliance", "version": __version__, "health": health,
                   "uptime_s": round(time.monotonic() - state.started, 1), "started_at": state.started_wall,
                   "now": time.time(), "interval_s": obs.history.interval_s,
                   # Where clients reach it: the REST port, and the gRPC port (0 = off).
                   "host": parts.settings.server.host, "port": parts.settings.server.port,
                   "grpc_port": parts.settings.grpc.port},
        "hardware": obs.hardware,
        "process": _process(memory),
        "models": [_model(entry, latest, rates) for entry in repository.models()],
        "admission": service.admission_stats(),
        "rollouts": _rollouts(parts),
        "cache": {"entries": len(cache), "bytes": cache.bytes, "max_bytes": cache.max_bytes,
                  "hits": cache.hits, "misses": cache.misses},
        "audit": audit,
        "series": obs.history.series(),
        "totals": _totals(latest),
        "quality": [q.snapshot() for q in obs.quality.versions()],
        "jobs": [job.as_dict() for job in parts.jobs.list()[:20]],  # the newest batch jobs
    }


@cache
def _this_process() -> psutil.Process:
    """One object, so ``cpu_percent()`` measures since the previous status request."""
    return psutil.Process()


def _process(memory: Any) -> dict[str, Any]:
    process = _this_process()
    with process.oneshot():
        rss = process.memory_info().rss
        cpu = process.cpu_percent(interval=None)
    return {"rss_bytes": rss, "cpu_percent": cpu, "system_memory_total": memory.total,
            "system_memory_available": memory.available}


_TOTALS = ("ok", "errors", "rejected", "client_errors", "auth_failures", "cache_hits", "cache_misses")


def _totals(latest: Sample | None) -> dict[str, float]:
    """Counts since start; ``errors`` are server errors only, 4xx and auth refusals have their own."""
    return {name: getattr(latest, name) if latest else 0 for name in _TOTALS}


def _model(entry: ModelEntry, latest: Sample | None, rates: dict[tuple[str, str], float]) -> dict[str, Any]:
    versions = []
    for number, version in sorted(entry.versions.items()):
        compiled, manifest = version.compiled, version.manifest
        key = (entry.name, str(number))
        ok, failed = latest.per_version.get(key, (0.0, 0.0)) if latest else (0.0, 0.0)
        versions.append({
            "version": number, "state": str(version.state), "reason": version.reason,
            "runtime": compiled.runtime if compiled else "", "device": compiled.device if compiled else "",
            "precision": manifest.precision if manifest else "", "format": manifest.format if manifest else "",
            "load_seconds": round(version.load_seconds, 3), "requests": ok + failed, "failed": failed,
            "rps": rates.get(key, 0.0),
        })
    config = entry.config
    return {"name": entry.name, "error": entry.error, "versions": versions,
            "description": config.description if config else "",
            "max_batch_size": config.max_batch_size if config else 0}


def _rollouts(parts: Any) -> list[dict[str, Any]]:
    """Each model's rollout (as the router applies it) with what the candidate measured."""
    router = parts.rollouts.router
    out = []
    for model in sorted(router.store.all()):
        rollout = router.rollout(model)
        if rollout is None:
            continue
        stats = router.stats(model)
        out.append({**rollout.to_dict(), "stats": stats.snapshot() if stats else None})
    return out
