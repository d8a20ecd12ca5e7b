"""Decision-log entries also go out as OTLP log records: the written, masked lines, counted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from conftest import SECRETS, make_record
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExporter, LogRecordExportResult

from extauthz.audit.otlp import OtlpDecisionLog
from extauthz.audit.settings import AuditConfig
from extauthz.audit.writer import DecisionLog, open_decision_log
from extauthz.config import TelemetryConfig
from extauthz.decision import Effect
from extauthz.telemetry import Metrics

TELEMETRY = TelemetryConfig(otlp_endpoint="127.0.0.1:4317", max_queue=64)


class Broken(LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _open(tmp_path: Path, exporter: LogRecordExporter, metrics: Metrics) -> DecisionLog:
    forward = OtlpDecisionLog(TELEMETRY, metrics, exporter=exporter)
    return DecisionLog(AuditConfig(path=tmp_path / "decisions.jsonl"), metrics=metrics, forward=forward)


def test_every_written_line_is_forwarded_as_is(tmp_path: Path) -> None:
    exporter, metrics = InMemoryLogRecordExporter(), Metrics()
    log = _open(tmp_path, exporter, metrics)
    log(make_record(1, effect=Effect.DENY, shadow=True))
    log(make_record(2))
    log.event("approval.requested", {"approval_id": "ap-1", "note": "for jane.doe@example.com"})
    log.close()  # flushes the OTLP batch too
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    records = exporter.get_finished_logs()
    assert [r.log_record.body for r in records] == lines  # header, 2 decisions, event, checkpoint
    text = json.dumps([r.log_record.body for r in records]) + str(
        [dict(r.log_record.attributes or {}) for r in records]
    )
    for secret in [*SECRETS, "jane.doe@example.com"]:
        assert secret not in text
    deny = dict(records[1].log_record.attributes or {})
    assert deny == {
        "aegis.log.type": "decision",
        "aegis.log.seq": 1,
        "aegis.decision_id": "d0001",
        "aegis.agent": "support-bot",
        "aegis.tenant": "acme",
        "aegis.tool": "payments.refund",
        "aegis.effect": "deny",
        "aegis.outcome": "deny",
        "aegis.rule": "rule-x",
        "aegis.policy_version": "abc123",
    }
    assert records[1].log_record.event_name == "aegis.decision"
    assert dict(records[3].log_record.attributes or {})["aegis.event"] == "approval.requested"
    assert dict(records[-1].log_record.attributes or {})["aegis.log.type"] == "checkpoint"
    assert records[0].resource.attributes["service.name"] == "aegis"
    assert metrics.registry.get_sample_value("aegis_decision_log_otlp_exported_total") == len(lines)


def test_a_failing_collector_is_counted_and_the_file_is_complete(tmp_path: Path) -> None:
    metrics = Metrics()
    log = _open(tmp_path, Broken(), metrics)
    for n in range(3):
        log(make_record(n))
    log.close()
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 5
    dropped = metrics.registry.get_sample_value("aegis_decision_log_otlp_dropped_total", {"reason": "export_failed"})
    assert dropped == 5


def test_open_decision_log_forwards_only_when_exporting(tmp_path: Path) -> None:
    audit = AuditConfig(path=tmp_path / "decisions.jsonl")
    for telemetry, expected in (
        (None, False),
        (TelemetryConfig(), False),
        (TelemetryConfig(otlp_endpoint="127.0.0.1:4317", decision_log_otlp=False), False),
        (TelemetryConfig(otlp_endpoint="127.0.0.1:4317"), True),
    ):
        log = open_decision_log(audit, Metrics(), telemetry)
        assert log is not None
        assert isinstance(log._forward, OtlpDecisionLog) is expected
        log.close(timeout=5)
