"""Observability: scrape-time collectors, prediction-quality signals, the status page's history,
W3C trace context and optional OTLP export.

docs/metrics.md lists every series; the status page (appliance/status/) reads the same figures.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.config import Settings
from appliance.metrics import Metrics
from appliance.observability.hardware import describe
from appliance.observability.history import History, take_sample
from appliance.observability.quality import QualityMonitor

if TYPE_CHECKING:
    from appliance.dataplane.service import InferenceService

log = logging.getLogger("appliance.observability")


@dataclass
class Observability:
    """Per-application observability state (one per app, like the metrics registry)."""

    quality: QualityMonitor
    history: History
    otel: Any = None  # OtlpExporter when observability.otlp_endpoint is set
    hardware: dict[str, Any] = field(default_factory=dict)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

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

    def start(self, metrics: Metrics, service: InferenceService) -> None:
        """Background work: the status history sampler and the one-off hardware description."""
        hardware = asyncio.create_task(asyncio.to_thread(describe))
        hardware.add_done_callback(lambda t: self.hardware.update(t.result()) if not t.cancelled()
                                   and t.exception() is None else None)
        self._tasks = [asyncio.create_task(self._sample_forever(metrics, service)), hardware]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.otel is not None:
            await asyncio.to_thread(self.otel.shutdown)

    async def _sample_forever(self, metrics: Metrics, service: InferenceService) -> None:
        while True:
            try:
                self.history.record(take_sample(metrics, service.admission_stats()))
                self.quality.versions()  # folds pending rows while the server is otherwise idle
            except Exception:
                log.exception("status sampler failed")
            await asyncio.sleep(self.history.interval_s)


__all__ = ["Observability"]
