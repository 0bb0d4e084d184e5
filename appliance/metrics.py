"""Prometheus metrics of the request path (prometheus-client, one registry per application).

Children are bound once per model version (``VersionMetrics``) so the hot path pays one
method call per observation, not a label lookup. The request-path families are prometheus-client
*collectors* over plain counters (``LoopCounter``, ``LoopHistogram``) rather than its ``Counter``
and ``Histogram``: those take a lock per increment and walk the buckets in Python, ~2.5 µs per
histogram observation, five of them per request. Every update here happens on the event loop
thread, so no lock is needed; a scrape reads the numbers as they are.

Figures that already live elsewhere (admission queues, cache size, audit writer, process, model
states, prediction quality) are not mirrored on the hot path: collectors in
``appliance.observability`` read them at scrape time.
docs/metrics.md lists every series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance import errors as e

_MAX_CACHED_CHILDREN = 4096  # bounds the cache; label cardinality is bounded by known models anyway
#: Fine below 10 ms, where a CPU model's answers fall: p99 ratios such as "admitted / unloaded" are read
#: from these buckets, and a bucket that spans 2–5 ms could not tell 1.5× from 2.5×.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
                   0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class LoopCounter:
    """A counter child updated only on the event loop thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopHistogram:
    """A histogram child updated only on the event loop thread (``le`` buckets, like Prometheus)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount


class _Family(Collector):
    """Labelled children of one metric, exposed through prometheus-client at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.children: dict[tuple[str, ...], Any] = {}

    def _new_child(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._new_child()
        return child

    def describe(self) -> Iterator[Metric]:
        return iter(self.collect())


class CounterFamily(_Family):
    def _new_child(self) -> LoopCounter:
        return LoopCounter()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self.children.items()):
            family.add_metric(key, child.value)
        yield family


class HistogramFamily(_Family):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: tuple[float, ...]) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [_format_le(b) for b in self.bounds] + ["+Inf"]

    def _new_child(self) -> LoopHistogram:
        return LoopHistogram(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self.children.items()):
            running, buckets = 0, []
            for le, count in zip(self._le, list(child.counts), strict=True):
                running += count
                buckets.append((le, running))
            family.add_metric(key, buckets, child.total)
        yield family


def _format_le(bound: float) -> str:
    """The ``le`` label as prometheus-client writes it (``0.005``, ``1.0``, ``16.0``)."""
    return repr(float(bound))


#: The front ends, as ``RequestContext.protocol`` names them: the ``protocol`` label of
#: ``appliance_requests_total``. A new front end adds its name here.
PROTOCOLS = ("rest", "grpc", "batch")


class Metrics:
    def __init__(self) -> None:
        # ``*_created`` series double the exposition and nothing here reads them (process-wide switch).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._error_children: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._http_error_children: dict[int, Any] = {}
        r = self.registry
        self.requests = CounterFamily("appliance_requests", "Inference requests by outcome.",
                                      ["model", "version", "protocol", "status"])
        self.request_seconds = HistogramFamily("appliance_request_duration_seconds",
                                               "Inference request latency inside the server.",
                                               ["model", "version"], LATENCY_BUCKETS)
        self.inference_seconds = HistogramFamily("appliance_inference_duration_seconds",
                                                 "Time from admission to outputs (queue + batch + runtime).",
                                                 ["model", "version"], LATENCY_BUCKETS)
        self.queue_seconds = HistogramFamily("appliance_queue_wait_seconds", "Time waiting for admission.",
                                             ["model"], LATENCY_BUCKETS)
        self.batch_size = HistogramFamily("appliance_batch_size", "Rows per batch sent to the runtime.",
                                          ["model", "version"], BATCH_BUCKETS)
        self.batch_requests = HistogramFamily("appliance_batch_requests", "Requests per batch sent to the runtime.",
                                              ["model", "version"], BATCH_BUCKETS)
        self.rejections = CounterFamily("appliance_rejections",
                                        "Requests refused before inference (429/503/504) by reason.",
                                        ["model", "reason"])
        self.cache = CounterFamily("appliance_cache_lookups", "Prediction-cache lookups.", ["model", "result"])
        self.http_errors = CounterFamily("appliance_http_errors",
                                         "Error responses by status code and class (server_error, rejected, "
                                         "auth, client_error).", ["status", "class"])
        for family in (self.requests, self.request_seconds, self.inference_seconds, self.queue_seconds,
                       self.batch_size, self.batch_requests, self.rejections, self.cache, self.http_errors):
            r.register(family)

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
            child = self._http_error_children[status] = self.http_errors.labels(str(status), status_class(status))
        child.inc()

    def for_version(self, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(
            request_seconds=self.request_seconds.labels(model, version),
            inference_seconds=self.inference_seconds.labels(model, version),
            batch_size=self.batch_size.labels(model, version),
            batch_requests=self.batch_requests.labels(model, version),
            queue_wait=self.queue_seconds.labels(model),
            ok={protocol: self.requests.labels(model, version, protocol, "200") for protocol in PROTOCOLS},
            cache_hit=self.cache.labels(model, "hit"),
            cache_miss=self.cache.labels(model, "miss"),
        )


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    request_seconds: LoopHistogram
    inference_seconds: LoopHistogram
    batch_size: LoopHistogram
    batch_requests: LoopHistogram
    queue_wait: LoopHistogram
    ok: dict[str, LoopCounter]  # answered requests by front end (``RequestContext.protocol``)
    cache_hit: LoopCounter
    cache_miss: LoopCounter

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


#: Refusals that protect the server (load shedding, not ready, deadline): not failures of it.
REJECTED_STATUSES = frozenset({429, 503, 504})
AUTH_STATUSES = frozenset({401, 403})


def status_class(status: int) -> str:
    """The class of an answer, for ``appliance_http_errors_total{class}`` and the status page.

    Kept apart because they call for different people: ``server_error`` (5xx but the refusals) is
    the operator's problem, ``rejected`` says the server is saturated, ``auth`` is a missing or
    wrong key, ``client_error`` a malformed request. One rate of all of them made a single 401
    read as "100 % errors".
    """
    if status < 400:
        return "ok"
    if status in REJECTED_STATUSES:
        return "rejected"
    if status in AUTH_STATUSES:
        return "auth"
    return "server_error" if status >= 500 else "client_error"
