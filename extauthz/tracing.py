"""OpenTelemetry spans: one per decision and one per ext_proc redaction, parented on Envoy's.

Envoy (with the OpenTelemetry tracer the generated config enables) starts the trace and
forwards ``traceparent`` to ext_authz and ext_proc; the service continues that context.
Export is batched and non-blocking: a full queue drops spans (bounded memory), it never
stalls a request.  Attribute values are codes, ids and names — never arguments or bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
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

_PROPAGATOR = TraceContextTextMapPropagator()
EXPORT_TIMEOUT_MS = 5000
SCHEDULE_DELAY_MS = 500


def _exporter(config: TelemetryConfig) -> SpanExporter:
    if config.otlp_protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=config.otlp_endpoint.rstrip("/") + "/v1/traces", timeout=EXPORT_TIMEOUT_MS / 1000)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter(endpoint=config.otlp_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_MS / 1000)


_TRACE_KEYS = ("traceparent", "tracestate")


def trace_carrier(
    grpc_metadata: Sequence[tuple[str, str | bytes]] | None, headers: Mapping[str, str]
) -> dict[str, str]:
    """W3C trace headers from the gRPC call's metadata (Envoy's client span), else the request's."""
    found = {k: v for k, v in (grpc_metadata or ()) if k in _TRACE_KEYS and isinstance(v, str)}
    return found or {k: headers[k] for k in _TRACE_KEYS if k in headers}


class Tracing:
    """The service's tracer provider (its own, not the global one) and span helpers."""

    def __init__(self, config: TelemetryConfig, exporter: SpanExporter | None = None) -> None:
        self.enabled = config.enabled or exporter is not None
        self._provider: TracerProvider | None = None
        self._tracer: Tracer = trace.NoOpTracer()
        if not self.enabled:
            return
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBasedTraceIdRatio(config.sample_ratio),
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter or _exporter(config),
                max_queue_size=config.max_queue,
                schedule_delay_millis=SCHEDULE_DELAY_MS,
                export_timeout_millis=EXPORT_TIMEOUT_MS,
            )
        )
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
