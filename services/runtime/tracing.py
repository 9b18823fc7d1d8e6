"""Optional OpenTelemetry (the `otel` extra, TUBEFLOW_TRACING=true): the trace context travels in every event's NATS
headers (`traceparent`), and every handled event is a span under it, so one job can be followed across services.

Spans go to an OTLP collector when `opentelemetry-exporter-otlp` is installed and OTEL_EXPORTER_OTLP_ENDPOINT is set;
without an exporter the context still propagates (the ids in the headers tie a job's events together).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger("tubeflow.tracing")

_tracer: Any = None


def setup_tracing(enabled: bool, service: str) -> bool:
    global _tracer
    if not enabled or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        log.warning("TUBEFLOW_TRACING is set but OpenTelemetry is not installed (install the `otel` extra)")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": f"tubeflow-{service}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("tubeflow")
    log.info("tracing on: trace context travels in NATS headers")
    return True


def inject(headers: dict[str, str]) -> None:
    """Add the current trace context (`traceparent`) to outgoing NATS headers."""
    if _tracer is not None:
        from opentelemetry import propagate

        propagate.inject(headers)


@contextmanager
def span(name: str, headers: dict[str, str] | None = None, **attributes: Any) -> Iterator[None]:
    """A span, child of the context in ``headers`` when given (an event being handled), else of the current one."""
    if _tracer is None:
        yield
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(headers) if headers is not None else None
    kind = trace.SpanKind.CONSUMER if headers is not None else trace.SpanKind.SERVER
    clean = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=clean):
        yield
