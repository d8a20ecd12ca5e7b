"""Span export is bounded, never blocks a request, and every drop is counted."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import write_config
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from extauthz.config import TelemetryConfig, load_config
from extauthz.errors import ConfigError
from extauthz.telemetry import Metrics
from extauthz.tracing import EXPORT_FAILED, QUEUE_FULL, ExportGate, Tracing


class BlockingExporter(SpanExporter):
    """Holds every export until released: a collector that stopped answering."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.result = result
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait()
        self.exported.extend(spans)
        return self.result

    def shutdown(self) -> None:
        self.release.set()


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("exporter bug")

    def shutdown(self) -> None:
        pass


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def spans(tracing: Tracing, n: int) -> None:
    for i in range(n):
        tracing.decision_span({}, {"x-aegis-decision-id": f"d{i}"}, "", "ext_authz")


def test_a_full_queue_drops_counts_and_never_blocks_the_caller() -> None:
    metrics = Metrics()
    exporter = BlockingExporter()
    tracing = Tracing(TelemetryConfig(max_queue=4), exporter, metrics=metrics)
    # The collector is stuck: the caller must still return, whatever the queue holds.
    caller = threading.Thread(target=spans, args=(tracing, 50))
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "recording a span blocked on a stuck exporter"
    # Places are freed only when an export returns, so exactly max_queue spans were taken.
    assert sample(metrics, "aegis_spans_dropped_total", reason=QUEUE_FULL) == 46
    assert sample(metrics, "aegis_spans_exported_total") == 0
    assert tracing.processor is not None and tracing.processor.gate.pending == 4
    exporter.release.set()
    tracing.shutdown()
    assert len(exporter.exported) == 4
    assert sample(metrics, "aegis_spans_exported_total") == 4
    assert sample(metrics, "aegis_spans_dropped_total", reason=EXPORT_FAILED) == 0


def test_room_is_made_again_once_the_collector_answers() -> None:
    metrics = Metrics()
    exporter = BlockingExporter()
    tracing = Tracing(TelemetryConfig(max_queue=4), exporter, metrics=metrics)
    spans(tracing, 10)
    exporter.release.set()
    assert tracing.processor is not None and tracing.processor.force_flush()
    spans(tracing, 3)
    tracing.shutdown()
    assert sample(metrics, "aegis_spans_exported_total") == 7
    assert sample(metrics, "aegis_spans_dropped_total", reason=QUEUE_FULL) == 6


@pytest.mark.parametrize("exporter", [BlockingExporter(SpanExportResult.FAILURE), RaisingExporter()])
def test_failed_exports_are_counted(exporter: SpanExporter) -> None:
    if isinstance(exporter, BlockingExporter):
        exporter.release.set()
    metrics = Metrics()
    tracing = Tracing(TelemetryConfig(max_queue=16), exporter, metrics=metrics)
    spans(tracing, 5)
    tracing.shutdown()
    assert sample(metrics, "aegis_spans_dropped_total", reason=EXPORT_FAILED) == 5
    assert sample(metrics, "aegis_spans_exported_total") == 0
    assert tracing.processor is not None and tracing.processor.gate.pending == 0


def test_tracing_off_records_nothing() -> None:
    metrics = Metrics()
    tracing = Tracing(TelemetryConfig(), metrics=metrics)
    spans(tracing, 3)
    assert tracing.processor is None
    assert sample(metrics, "aegis_spans_dropped_total", reason=QUEUE_FULL) == 0


def test_gate_counts_without_metrics_and_refuses_after_close() -> None:
    gate = ExportGate(2)
    assert [gate.admit() for _ in range(3)] == [True, True, False]
    gate.done(2, ok=True)
    assert gate.admit()
    gate.done(1, ok=False)
    gate.close()
    assert not gate.admit()
    assert (gate.exported, gate.dropped, gate.pending) == (2, {QUEUE_FULL: 1, EXPORT_FAILED: 1}, 0)


def test_decision_log_otlp_setting(tmp_path: Path) -> None:
    endpoint = {"otlp_endpoint": "127.0.0.1:4317"}
    assert load_config(write_config(tmp_path, {"telemetry": endpoint})).telemetry.decision_log_export
    off = load_config(write_config(tmp_path, {"telemetry": {**endpoint, "decision_log_otlp": False}})).telemetry
    assert off.enabled and not off.decision_log_export
    assert not load_config(write_config(tmp_path, {})).telemetry.decision_log_export
    with pytest.raises(ConfigError, match="telemetry.decision_log_otlp"):
        load_config(write_config(tmp_path, {"telemetry": {**endpoint, "decision_log_otlp": "yes"}}))
