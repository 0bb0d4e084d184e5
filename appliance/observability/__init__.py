"""Observability: scrape-time collectors, prediction-quality signals, the status page's history,
W3C trace context and optional OTLP export.

docs/metrics.md lists every series; the status page (appliance/status/) reads the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.config import Settings
from appliance.observability.history import History
from appliance.observability.quality import QualityMonitor


@dataclass
class Observability:
    """Per-application observability state (one per app, like the metrics registry)."""

    quality: QualityMonitor
    history: History
    otel: Any = None  # OtlpExporter when observability.otlp_endpoint is set
    hardware: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Observability:
        config = settings.observability
        interval = max(0.5, config.status_interval_s)
        otel = None
        if config.otlp_endpoint:
            from appliance.observability.otel import OtlpExporter  # the SDK only when asked for

            otel = OtlpExporter(config.otlp_endpoint)
        return cls(QualityMonitor(window_rows=max(1, config.drift_window_rows)),
                   History(interval, config.status_history_s), otel)


__all__ = ["Observability"]
