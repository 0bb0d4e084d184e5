"""One server's metrics from its workers' expositions: counters and histograms add up, gauges are
per worker (a ``worker`` label), and the audit writer's figures, which every worker reports alike,
are taken once.

prometheus-client's own multiprocess mode needs its ``Counter``/``Histogram`` classes writing to
mmap files; the request path uses lock-free loop counters instead (``appliance.metrics``), so the
workers' texts are merged at scrape time — a scrape costs one local round trip per worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

#: Families every worker reports with the same value (read from the one audit writer).
SERVER_WIDE_PREFIXES = ("appliance_audit_",)
_ADDED = ("counter", "histogram", "summary", "gaugehistogram", "unknown")


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_expositions(texts: Iterable[tuple[str, str]]) -> bytes:
    """``texts``: (worker label, Prometheus text) pairs, this worker's first. Returns Prometheus text."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            first = family.name not in merged
            if first:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                sums[family.name] = {}
            if family.name.startswith(SERVER_WIDE_PREFIXES):
                if first:
                    merged[family.name].samples.extend(family.samples)
                continue
            if family.type in _ADDED:
                totals = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
            else:  # gauges, info, state sets: per worker
                merged[family.name].samples.extend(
                    Sample(s.name, {**s.labels, "worker": worker}, s.value) for s in family.samples)
    for name, totals in sums.items():
        merged[name].samples.extend(Sample(sample, dict(labels), value) for (sample, labels), value in totals.items())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(merged.values())))
    return generate_latest(registry)
