"""Optional OpenTelemetry export of server spans over OTLP/HTTP (the ``otel`` extra).

Imported only when ``observability.otlp_endpoint`` is set, so the server neither needs nor loads
the SDK otherwise. Spans are batched and exported by the SDK's background thread; the request
path only starts and ends a span.
"""

from __future__ import annotations

from typing import Any

from appliance import __version__
from appliance.observability.tracing import TraceContext


class OtlpExporter:
    def __init__(self, endpoint: str, service_name: str = "model-appliance") -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError("observability.otlp_endpoint needs the 'otel' extra: "
                               "pip install 'model-appliance[otel]'") from exc
        self._api = trace
        self._provider = TracerProvider(resource=Resource.create(
            {"service.name": service_name, "service.version": __version__}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint))))
        self._tracer = self._provider.get_tracer("appliance")

    def start(self, trace: TraceContext, name: str, attributes: dict[str, Any]) -> Any:
        """Start the server span as a child of the caller's; rewrite ``trace`` to the span's ids."""
        api = self._api
        parent = None
        if trace.parent_id:
            remote = api.SpanContext(int(trace.trace_id, 16), int(trace.parent_id, 16), is_remote=True,
                                     trace_flags=api.TraceFlags(int(trace.flags, 16)))
            parent = api.set_span_in_context(api.NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context=parent, kind=api.SpanKind.SERVER, attributes=attributes)
        ids = span.get_span_context()
        trace.trace_id, trace.span_id = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"
        trace.flags = f"{int(ids.trace_flags):02x}"
        return span

    def finish(self, span: Any, status: int, attributes: dict[str, Any]) -> None:
        span.set_attributes({"http.response.status_code": status, **attributes})
        if status >= 500:
            span.set_status(self._api.Status(self._api.StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        self._provider.shutdown()


def _traces_url(endpoint: str) -> str:
    """Accept the collector's base URL (``http://host:4318``) or the full traces URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"
