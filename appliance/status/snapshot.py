"""The status document behind the built-in page (``GET /v2/status``): one JSON object with health,
hardware, models, traffic history, audit health and prediction quality."""

from __future__ import annotations

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
    cache = service.cache
    memory = psutil.virtual_memory()
    return {
        "server": {"name": "model-appliance", "version": __version__, "health": health,
                   "uptime_s": round(time.monotonic() - state.started, 1), "started_at": state.started_wall,
                   "now": time.time(), "interval_s": obs.history.interval_s},
        "hardware": obs.hardware,
        "process": _process(memory),
        "models": [_model(entry, latest, rates) for entry in repository.models()],
        "admission": service.admission_stats(),
        "cache": {"entries": len(cache), "bytes": cache.bytes, "max_bytes": cache.max_bytes,
                  "hits": cache.hits, "misses": cache.misses},
        "audit": audit_snapshot(parts.audit_log),
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


def _totals(latest: Sample | None) -> dict[str, float]:
    if latest is None:
        return {"ok": 0, "errors": 0, "rejected": 0, "cache_hits": 0, "cache_misses": 0}
    return {"ok": latest.ok, "errors": latest.errors, "rejected": latest.rejected,
            "cache_hits": latest.cache_hits, "cache_misses": latest.cache_misses}


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
