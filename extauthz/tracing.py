"""OpenTelemetry spans: one per decision and one per ext_proc redaction, parented on Envoy's.

Envoy (with the OpenTelemetry tracer the generated config enables) starts the trace and
forwards ``traceparent`` to ext_authz and ext_proc; the service continues that context.
Export is batched and non-blocking: a full queue drops spans (bounded memory), it never
stalls a request, and every dropped span is counted (``aegis_spans_dropped_total{reason}``,
beside ``aegis_spans_exported_total``).  Attribute values are codes, ids and names — never
arguments or bodies.

:class:`ExportGate` is the counting: it bounds the items handed to a batch processor and not
yet through its exporter, refuses (and counts) what does not fit, and counts what the
exporter delivered or failed to.  The decision log's OTLP logs delivery
(``extauthz/audit/otlp.py``) uses the same gate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from extauthz.config import TelemetryConfig
from extauthz.metadata import (
    MD_AGENT_ID,
    MD_APPROVAL_ID,
    MD_DECISION,
    MD_DECISION_ID,
    MD_POLICY_VERSION,
    MD_RULE,
    MD_SHADOW,
    MD_TOOL,
)

log = logging.getLogger("aegis.tracing")
_PROPAGATOR = TraceContextTextMapPropagator()
EXPORT_TIMEOUT_MS = 5000
SCHEDULE_DELAY_MS = 500
MAX_EXPORT_BATCH = 64
QUEUE_FULL, EXPORT_FAILED = "queue_full", "export_failed"


class SpanMetrics(Protocol):
    """The counters :class:`Tracing` updates (``extauthz.telemetry.Metrics`` has them)."""

    spans_exported: Any
    spans_dropped: Any


class ExportGate:
    """Bounds what a batch processor holds and counts what is dropped or delivered.

    ``admit()`` (hot path: a lock and an integer) takes a place for one item, or refuses it
    when ``capacity`` items are queued or in an unfinished export: the caller then drops the
    item, and it is counted ``queue_full``.  ``done(n, ok)`` (exporter thread) frees ``n``
    places and counts them exported or ``export_failed``.  Because a place is freed only when
    the export returns, the batch processor's own queue (of the same capacity) never
    overflows: every drop goes through here and is counted, none is silent.
    """

    def __init__(
        self,
        capacity: int,
        exported: Callable[[int], None] | None = None,
        dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._exported_cb, self._dropped_cb = exported, dropped
        self.exported = 0
        self.dropped: dict[str, int] = {QUEUE_FULL: 0, EXPORT_FAILED: 0}

    @property
    def pending(self) -> int:
        """Items queued or being exported."""
        return self._pending

    def admit(self) -> bool:
        with self._lock:
            if self._closed:
                return False  # after shutdown: the processor ignores it anyway
            if self._pending >= self.capacity:
                self.dropped[QUEUE_FULL] += 1
                full = True
            else:
                self._pending += 1
                full = False
        if full and self._dropped_cb is not None:
            self._dropped_cb(QUEUE_FULL, 1)
        return not full

    def done(self, count: int, ok: bool) -> None:
        with self._lock:
            self._pending = max(0, self._pending - count)
            if ok:
                self.exported += count
            else:
                self.dropped[EXPORT_FAILED] += count
        if ok and self._exported_cb is not None:
            self._exported_cb(count)
        elif not ok and self._dropped_cb is not None:
            self._dropped_cb(EXPORT_FAILED, count)

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _batch_size(capacity: int) -> int:
    return min(MAX_EXPORT_BATCH, capacity)


class _GatedSpanExporter(SpanExporter):
    """Frees the gate's places when an export returns (successful or not)."""

    def __init__(self, inner: SpanExporter, gate: ExportGate) -> None:
        self._inner, self._gate = inner, gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.FAILURE
        try:
            result = self._inner.export(spans)
        except Exception:  # an exporter bug must not lose the count
            log.exception("span export raised")
        finally:
            self._gate.done(len(spans), result == SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingSpanProcessor(SpanProcessor):
    """``BatchSpanProcessor`` behind an :class:`ExportGate`: bounded, non-blocking, counted."""

    def __init__(self, exporter: SpanExporter, max_queue: int, metrics: SpanMetrics | None = None) -> None:
        self.gate = ExportGate(
            max_queue,
            exported=metrics.spans_exported.inc if metrics is not None else None,
            dropped=(lambda reason, n: metrics.spans_dropped.labels(reason).inc(n)) if metrics is not None else None,
        )
        self._inner = BatchSpanProcessor(
            _GatedSpanExporter(exporter, self.gate),
            max_queue_size=max_queue,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=_batch_size(max_queue),
            export_timeout_millis=EXPORT_TIMEOUT_MS,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self.gate.admit():
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self.gate.close()
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _exporter(config: TelemetryConfig) -> SpanExporter:
    if config.otlp_protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=config.otlp_endpoint.rstrip("/") + "/v1/traces", timeout=EXPORT_TIMEOUT_MS / 1000)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter(endpoint=config.otlp_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_MS / 1000)


TRACE_KEYS = ("traceparent", "tracestate")  # the W3C trace context headers


def trace_carrier(
    grpc_metadata: Sequence[tuple[str, str | bytes]] | None, headers: Mapping[str, str]
) -> dict[str, str]:
    """W3C trace headers from the gRPC call's metadata (Envoy's client span), else the request's."""
    found = {k: v for k, v in (grpc_metadata or ()) if k in TRACE_KEYS and isinstance(v, str)}
    return found or {k: headers[k] for k in TRACE_KEYS if k in headers}


class Tracing:
    """The service's tracer provider (its own, not the global one) and span helpers."""

    def __init__(
        self, config: TelemetryConfig, exporter: SpanExporter | None = None, *, metrics: SpanMetrics | None = None
    ) -> None:
        self.enabled = config.enabled or exporter is not None
        self._provider: TracerProvider | None = None
        self._tracer: Tracer = trace.NoOpTracer()
        self.processor: CountingSpanProcessor | None = None
        if not self.enabled:
            return
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBasedTraceIdRatio(config.sample_ratio),
        )
        self.processor = CountingSpanProcessor(exporter or _exporter(config), config.max_queue, metrics)
        self._provider.add_span_processor(self.processor)
        self._tracer = self._provider.get_tracer("aegis")

    @staticmethod
    def parent(headers: Mapping[str, str]) -> Context:
        """The W3C trace context Envoy forwarded (an empty context when there is none)."""
        return _PROPAGATOR.extract(carrier=dict(headers))

    def decision_span(self, headers: Mapping[str, str], metadata: Mapping[str, str], reason: str, api: str) -> None:
        """Record one decision as a finished span (start = now is close enough: the span's
        duration is not the measurement, the histogram is)."""
        if not self.enabled:
            return
        attributes: dict[str, Any] = {
            "aegis.decision": metadata.get(MD_DECISION, "error"),
            "aegis.rule": metadata.get(MD_RULE, ""),
            "aegis.reason": reason[:256],
            "aegis.policy_version": metadata.get(MD_POLICY_VERSION, ""),
            "aegis.decision_id": metadata.get(MD_DECISION_ID, ""),
            "aegis.api": api,
            "gen_ai.operation.name": "execute_tool",
        }
        for key, name in (
            (MD_AGENT_ID, "aegis.agent_id"),
            (MD_TOOL, "aegis.tool"),
            (MD_APPROVAL_ID, "aegis.approval_id"),
        ):
            if metadata.get(key):
                attributes[name] = metadata[key]
        if metadata.get(MD_AGENT_ID):
            attributes["gen_ai.agent.id"] = metadata[MD_AGENT_ID]
        if metadata.get(MD_TOOL):
            attributes["gen_ai.tool.name"] = metadata[MD_TOOL]
        if metadata.get(MD_SHADOW):
            attributes["aegis.shadow"] = metadata[MD_SHADOW]
        span = self._tracer.start_span(
            "aegis.decision", context=self.parent(headers), kind=SpanKind.SERVER, attributes=attributes
        )
        if attributes["aegis.decision"] == "error":
            span.set_status(Status(StatusCode.ERROR, attributes["aegis.rule"]))
        span.end()

    def redaction_span(self, headers: Mapping[str, str], tool: str, counts: Mapping[str, int], phase: str) -> None:
        """Record one ext_proc redaction (types and counts only)."""
        if not self.enabled:
            return
        attributes: dict[str, Any] = {"aegis.tool": tool, "gen_ai.tool.name": tool, "aegis.redaction.phase": phase}
        attributes.update({f"aegis.redactions.{kind.lower()}": count for kind, count in counts.items()})
        self._tracer.start_span(
            "aegis.redaction", context=self.parent(headers), kind=SpanKind.SERVER, attributes=attributes
        ).end()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
