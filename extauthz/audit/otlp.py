"""Decision-log entries as OTLP log records (delivery to a SIEM beside the JSONL file).

With ``telemetry.otlp_endpoint`` set (and ``telemetry.decision_log_otlp``, default true),
the writer thread hands every entry it has written — header, decision, event, checkpoint —
to :meth:`OtlpDecisionLog.emit`: one ``LogRecord`` whose body is the line exactly as written
to the file (masked, with ``seq``, ``prev_hash`` and ``hash``, so the receiver can check the
chain and anchor checkpoint heads off the host) and whose attributes are the flat fields a
SIEM filters on.  Records never hold anything the file does not: the entry was masked before
it was sealed.

Delivery is best effort and never slows the log: a bounded queue (``telemetry.max_queue``)
in front of the SDK's ``BatchLogRecordProcessor`` and ``OTLPLogExporter``; what does not fit
or fails to export is counted (``aegis_decision_log_otlp_dropped_total{reason}``).  The file
remains the record of truth: it never drops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource

from extauthz.config import TelemetryConfig
from extauthz.tracing import EXPORT_TIMEOUT_MS, MAX_EXPORT_BATCH, SCHEDULE_DELAY_MS, ExportGate

log = logging.getLogger("aegis.audit.otlp")
SCOPE = "aegis.decision_log"
SHUTDOWN_TIMEOUT_MS = 5000
# Entry field → log record attribute (None and "" are left out).
ATTRIBUTES = {
    "decision_id": "aegis.decision_id",
    "agent": "aegis.agent",
    "tenant": "aegis.tenant",
    "tool": "aegis.tool",
    "effect": "aegis.effect",
    "outcome": "aegis.outcome",
    "rule": "aegis.rule",
    "policy_version": "aegis.policy_version",
    "approval_id": "aegis.approval_id",
    "kind": "aegis.event",
}


class OtlpLogMetrics(Protocol):
    """The counters the forwarder updates (``extauthz.telemetry.Metrics`` has them)."""

    otlp_logs_exported: Any
    otlp_logs_dropped: Any


def log_exporter(config: TelemetryConfig) -> LogRecordExporter:
    """The OTLP log exporter for ``telemetry.otlp_endpoint`` (gRPC or HTTP)."""
    timeout = EXPORT_TIMEOUT_MS / 1000
    if config.otlp_protocol == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter

        return HttpExporter(endpoint=config.otlp_endpoint.rstrip("/") + "/v1/logs", timeout=timeout)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter

    return GrpcExporter(endpoint=config.otlp_endpoint, insecure=True, timeout=timeout)


def attributes(entry: Mapping[str, Any], seq: int) -> dict[str, str | int]:
    """The flat, already-masked fields of an entry a SIEM filters on."""
    out: dict[str, str | int] = {"aegis.log.type": str(entry.get("type", "")), "aegis.log.seq": seq}
    for field, name in ATTRIBUTES.items():
        value = entry.get(field)
        if value is not None and value != "":
            out[name] = str(value)
    return out


class _GatedLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, gate: ExportGate) -> None:
        self._inner, self._gate = inner, gate

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = LogRecordExportResult.FAILURE
        try:
            result = self._inner.export(batch)
        except Exception:  # an exporter bug must not lose the count
            log.exception("decision-log OTLP export raised")
        finally:
            self._gate.done(len(batch), result == LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _GatedLogProcessor(LogRecordProcessor):
    def __init__(self, exporter: LogRecordExporter, gate: ExportGate) -> None:
        self._gate = gate
        self._inner = BatchLogRecordProcessor(
            _GatedLogExporter(exporter, gate),
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=min(MAX_EXPORT_BATCH, gate.capacity),
            export_timeout_millis=EXPORT_TIMEOUT_MS,
            max_queue_size=gate.capacity,
        )

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._gate.admit():
            self._inner.on_emit(log_record)

    def shutdown(self) -> None:
        self._gate.close()
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class OtlpDecisionLog:
    """The forwarder ``DecisionLog`` calls on its writer thread for each written entry."""

    def __init__(
        self,
        config: TelemetryConfig,
        metrics: OtlpLogMetrics | None = None,
        exporter: LogRecordExporter | None = None,
    ) -> None:
        self.gate = ExportGate(
            config.max_queue,
            exported=metrics.otlp_logs_exported.inc if metrics is not None else None,
            dropped=(lambda reason, n: metrics.otlp_logs_dropped.labels(reason).inc(n))
            if metrics is not None
            else None,
        )
        self._provider = LoggerProvider(resource=Resource.create({"service.name": config.service_name}))
        self._provider.add_log_record_processor(_GatedLogProcessor(exporter or log_exporter(config), self.gate))
        self._logger = self._provider.get_logger(SCOPE)

    def emit(self, entry: Mapping[str, Any], seq: int, line: bytes) -> None:
        """One written entry → one log record (body: the line as written, without its newline)."""
        self._logger.emit(
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=line.rstrip(b"\n").decode("utf-8"),
            attributes=attributes(entry, seq),
            event_name=f"aegis.{entry.get('type', 'entry')}",
        )

    def flush(self, timeout_millis: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        return self._provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout), then stop."""
        self._provider.shutdown()
