"""Scrape-time collector: figures that already live elsewhere are read when Prometheus asks.

Admission queues, cache size, model states, the audit writer and the process are never
mirrored into gauges on the hot path; this collector reads them at scrape time instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance import __version__
from appliance.dataplane.service import InferenceService
from appliance.repository import Repository

#: Returns the audit log in use (anything with ``stats()``), or None when there is none.
AuditSource = Callable[[], Any]


def audit_snapshot(audit: Any) -> dict[str, Any]:
    """Audit health as plain data; ``{"enabled": False}`` when the log is absent or a null log."""
    if audit is None or not hasattr(audit, "stats") or getattr(audit, "paths", None) is None:
        return {"enabled": False}
    stats = audit.stats()
    doc = dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type) \
        else dict(stats)
    doc.pop("last_commit_monotonic", None)
    if hasattr(audit, "health"):
        health = audit.health()
        doc.update(ready=health.ready, reason=health.reason)
    upkeep = getattr(audit, "upkeep", None)
    if upkeep is not None:
        doc["capacity"] = dataclasses.asdict(upkeep.capacity)
    return {"enabled": True, **doc}


def _add_limits(limit: GaugeMetricFamily, noload: GaugeMetricFamily, model: str, stats: dict[str, Any]) -> None:
    """The limiter's figures where the service reports them: ``limit`` and ``noload_ms`` came with
    adaptive admission, so a service without them exports no sample rather than a made-up 0."""
    if stats.get("limit") is not None:
        limit.add_metric([model], stats["limit"])
    noload_ms = stats.get("noload_ms")
    if noload_ms is not None and noload_ms > 0:  # 0 / None: not measured yet (no request finished)
        noload.add_metric([model], noload_ms / 1000)


_CAPACITY = (
    ("appliance_audit_database_bytes", "database_bytes", "Size of the audit database and its WAL."),
    ("appliance_audit_max_bytes", "max_bytes", "Size limit of the audit database (audit.max_bytes or 20 % of "
                                               "its file system)."),
    ("appliance_audit_filesystem_free_bytes", "filesystem_free_bytes",
     "Free space of the file system holding the audit database."),
    ("appliance_audit_growth_bytes_per_second", "growth_bytes_per_s",
     "Growth of the audit database: records/s over the last hour × bytes per record."),
    ("appliance_audit_size_limited", "size_limited",
     "1 when the size limit purged records younger than audit.retention_days (raise max_bytes or the disk)."),
)


def _capacity_families(capacity: dict[str, Any]) -> Iterator[Metric]:
    """The capacity forecast the server's retention check measured last (upkeep.Capacity)."""
    for name, key, text in _CAPACITY:
        yield GaugeMetricFamily(name, text, value=float(capacity[key]))
    forecast = GaugeMetricFamily("appliance_audit_forecast_seconds",
                                 "Estimated time until the audit database reaches its size limit or fills "
                                 "its file system, at the current growth (+Inf: never).", labels=["until"])
    forecast.add_metric(["limit"], capacity["seconds_to_limit"])
    forecast.add_metric(["disk_full"], capacity["seconds_to_full"])
    purged = CounterMetricFamily("appliance_audit_purged_records",
                                 "Audit records purged by retention (age or size) since start.")
    purged.add_metric([], capacity["purged_records"])
    yield from (forecast, purged)


class ScrapeCollector:
    def __init__(self, service: InferenceService, repository: Repository, audit: AuditSource,
                 ready: Callable[[], bool]) -> None:
        self._service = service
        self._repository = repository
        self._audit = audit
        self._ready = ready
        self._process = psutil.Process()

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; collect() runs only when scraped

    def collect(self) -> Iterator[Metric]:
        yield from self._server()
        yield from self._admission()
        yield from self._cache()
        yield from self._models()
        yield from self._audit_families()
        yield from self._process_families()

    def _server(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("appliance_build_info", "Always 1; the label carries the version.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        ready = GaugeMetricFamily("appliance_ready", "1 when the server reports ready (all models loaded).")
        ready.add_metric([], 1 if self._ready() else 0)
        draining = GaugeMetricFamily("appliance_draining", "1 while the server refuses new work to stop.")
        draining.add_metric([], 1 if self._service.draining else 0)
        yield from (info, ready, draining)

    def _admission(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("appliance_in_flight_requests", "Admitted requests not yet answered.",
                                      labels=["model"])
        depth = GaugeMetricFamily("appliance_queue_depth", "Requests waiting for admission.", labels=["model"])
        queued = GaugeMetricFamily("appliance_queued_bytes", "Request bytes waiting for admission.",
                                   labels=["model"])
        limit = GaugeMetricFamily("appliance_admission_limit",
                                  "Requests a model admits at once now (adaptive, or the fixed max_concurrency).",
                                  labels=["model"])
        noload = GaugeMetricFamily("appliance_admission_noload_latency_seconds",
                                   "Latency the adaptive limiter estimates for a request that does not queue.",
                                   labels=["model"])
        for model, stats in self._service.admission_stats().items():
            in_flight.add_metric([model], stats["in_flight"])
            depth.add_metric([model], stats["waiting"])
            queued.add_metric([model], stats["queued_bytes"])
            _add_limits(limit, noload, model, stats)
        paced = CounterMetricFamily("appliance_refusals_paced",
                                    "429s held for their turn because refusals exceeded limits.refusals_per_s.")
        paced.add_metric([], self._service.refusals.paced)
        yield from (in_flight, depth, queued, limit, noload, paced)

    def _cache(self) -> Iterator[Metric]:
        cache = self._service.cache
        entries = GaugeMetricFamily("appliance_cache_entries", "Outputs held by the prediction cache.")
        entries.add_metric([], len(cache))
        size = GaugeMetricFamily("appliance_cache_bytes", "Bytes held by the prediction cache.")
        size.add_metric([], cache.bytes)
        limit = GaugeMetricFamily("appliance_cache_max_bytes", "Byte budget of the prediction cache.")
        limit.add_metric([], cache.max_bytes)
        yield from (entries, size, limit)

    def _models(self) -> Iterator[Metric]:
        labels = ["model", "version", "runtime", "device", "precision", "format", "state"]
        ready = GaugeMetricFamily("appliance_model_ready",
                                  "1 when a model version is ready; labels say where and how it runs.",
                                  labels=labels)
        load = GaugeMetricFamily("appliance_model_load_seconds", "Time to verify and compile a version.",
                                 labels=["model", "version"])
        for entry in self._repository.models():
            if not entry.versions:
                ready.add_metric([entry.name, "", "", "", "", "", "UNAVAILABLE"], 0)
            for number, version in sorted(entry.versions.items()):
                compiled, manifest = version.compiled, version.manifest
                ready.add_metric([entry.name, str(number), compiled.runtime if compiled else "",
                                  compiled.device if compiled else "", manifest.precision if manifest else "",
                                  manifest.format if manifest else "", str(version.state)],
                                 1 if version.ready else 0)
                if version.ready:
                    load.add_metric([entry.name, str(number)], version.load_seconds)
        yield from (ready, load)

    def _audit_families(self) -> Iterator[Metric]:
        doc = audit_snapshot(self._audit())
        enabled = GaugeMetricFamily("appliance_audit_enabled", "1 when inference records are audited.")
        enabled.add_metric([], 1 if doc["enabled"] else 0)
        yield enabled
        if not doc["enabled"]:
            return
        written = CounterMetricFamily("appliance_audit_records_written", "Audit records committed to disk.")
        written.add_metric([], doc.get("records_written", 0))
        commits = CounterMetricFamily("appliance_audit_commits", "Group commits of the audit writer.")
        commits.add_metric([], doc.get("commits", 0))
        pending = GaugeMetricFamily("appliance_audit_records_pending", "Audit records waiting for the writer.")
        pending.add_metric([], doc.get("records_pending", 0))
        lag = GaugeMetricFamily("appliance_audit_writer_lag_seconds",
                                "Age of the oldest audit record not yet committed (0 when idle).")
        lag.add_metric([], doc.get("writer_lag_seconds", 0.0))
        healthy = GaugeMetricFamily("appliance_audit_healthy", "1 while the audit writer commits without error.")
        healthy.add_metric([], 1 if doc.get("healthy") else 0)
        dropped = CounterMetricFamily("appliance_audit_records_dropped",
                                      "Audit records lost with nobody waiting on them (relaxed mode, refusals).")
        dropped.add_metric([], doc.get("records_dropped", 0))
        failures = CounterMetricFamily("appliance_audit_commit_failures", "Audit commits that failed.")
        failures.add_metric([], doc.get("commit_failures", 0))
        yield from (written, commits, pending, lag, healthy, dropped, failures)
        if "capacity" in doc:
            yield from _capacity_families(doc["capacity"])

    def _process_families(self) -> Iterator[Metric]:
        process = self._process
        with process.oneshot():
            cpu = process.cpu_times()
            memory = process.memory_info()
            threads = process.num_threads()
            fds = process.num_fds() if hasattr(process, "num_fds") else 0
            created = process.create_time()
        system = psutil.virtual_memory()
        families = [
            CounterMetricFamily("process_cpu_seconds", "User and system CPU time of the server process.",
                                value=cpu.user + cpu.system),
            GaugeMetricFamily("process_resident_memory_bytes", "Resident set size.", value=memory.rss),
            GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size.", value=memory.vms),
            GaugeMetricFamily("process_open_fds", "Open file descriptors.", value=fds),
            GaugeMetricFamily("process_threads", "OS threads of the server process.", value=threads),
            GaugeMetricFamily("process_start_time_seconds", "Start time, seconds since the epoch.", value=created),
            GaugeMetricFamily("appliance_system_memory_total_bytes", "Physical memory of the host.",
                              value=system.total),
            GaugeMetricFamily("appliance_system_memory_available_bytes", "Memory available to new work.",
                              value=system.available),
            GaugeMetricFamily("appliance_uptime_seconds", "Seconds since the server process started.",
                              value=max(0.0, time.time() - created)),
        ]
        yield from families
