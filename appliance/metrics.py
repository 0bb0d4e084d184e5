"""Prometheus metrics of the request path (prometheus-client, one registry per application).

Children are bound once per model version (``VersionMetrics``) so the hot path pays one
method call per observation, not a label lookup. Figures that already live elsewhere (admission
queues, cache size, audit writer, process, model states, prediction quality) are not mirrored on
the hot path: collectors in ``appliance.observability`` read them at scrape time.
docs/metrics.md lists every series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from appliance import errors as e

_MAX_CACHED_CHILDREN = 4096  # bounds the cache; label cardinality is bounded by known models anyway
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        # ``*_created`` series double the exposition and nothing here reads them (process-wide switch).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._error_children: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._http_error_children: dict[int, Any] = {}
        r = self.registry
        self.requests = Counter("appliance_requests", "Inference requests by outcome.",
                                ["model", "version", "protocol", "status"], registry=r)
        self.request_seconds = Histogram("appliance_request_duration_seconds",
                                         "Inference request latency inside the server.",
                                         ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("appliance_inference_duration_seconds",
                                           "Time from admission to outputs (queue + batch + runtime).",
                                           ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("appliance_queue_wait_seconds", "Time waiting for admission.",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("appliance_batch_size", "Rows per batch sent to the runtime.",
                                    ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("appliance_batch_requests", "Requests per batch sent to the runtime.",
                                        ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.rejections = Counter("appliance_rejections", "Requests refused before inference (429/503/504) by reason.",
                                  ["model", "reason"], registry=r)
        self.cache = Counter("appliance_cache_lookups", "Prediction-cache lookups.",
                             ["model", "result"], registry=r)
        self.http_errors = Counter("appliance_http_errors", "Error responses by status code.",
                                   ["status"], registry=r)

    def record_error(self, model: str, version: str, protocol: str, status: int, error: e.ApplianceError) -> None:
        """Count a refused or failed request. Children are cached: under a flood this runs for
        every refusal, and a prometheus-client label lookup costs several microseconds."""
        key = (model, version, protocol, status, type(error))
        children = self._error_children.get(key)
        if children is None:
            reason = rejection_reason(error)
            children = (self.requests.labels(model, version, protocol, str(status)),
                        self.rejections.labels(model, reason) if reason else None)
            if len(self._error_children) < _MAX_CACHED_CHILDREN:
                self._error_children[key] = children
        children[0].inc()
        if children[1] is not None:
            children[1].inc()

    def count_http_error(self, status: int) -> None:
        child = self._http_error_children.get(status)
        if child is None:
            child = self._http_error_children[status] = self.http_errors.labels(str(status))
        child.inc()

    def for_version(self, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(
            request_seconds=self.request_seconds.labels(model, version),
            inference_seconds=self.inference_seconds.labels(model, version),
            batch_size=self.batch_size.labels(model, version),
            batch_requests=self.batch_requests.labels(model, version),
            queue_wait=self.queue_seconds.labels(model),
            ok=self.requests.labels(model, version, "rest", "200"),
            cache_hit=self.cache.labels(model, "hit"),
            cache_miss=self.cache.labels(model, "miss"),
        )


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    request_seconds: Histogram
    inference_seconds: Histogram
    batch_size: Histogram
    batch_requests: Histogram
    queue_wait: Histogram
    ok: Counter
    cache_hit: Counter
    cache_miss: Counter

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_size.observe(rows)
        self.batch_requests.observe(requests)


#: Why a request was refused before inference (429/503/504), for ``appliance_rejections_total``.
_REJECTION_REASONS: tuple[tuple[type[e.ApplianceError], str], ...] = (
    (e.Overloaded, "overloaded"),
    (e.DeadlineExceeded, "deadline"),
    (e.ModelNotReady, "not_ready"),
    (e.ServiceUnavailable, "unavailable"),
)


def rejection_reason(error: e.ApplianceError) -> str:
    for cls, reason in _REJECTION_REASONS:
        if isinstance(error, cls):
            return reason
    return ""
