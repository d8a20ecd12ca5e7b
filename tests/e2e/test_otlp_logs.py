"""The decision log delivered over OTLP logs, end to end, masked.

A real OTLP/gRPC receiver (the collector's LogsService and TraceService) stands in for a
SIEM's collector; a gateway with the decision log on and ``telemetry.otlp_endpoint`` pointing
at it answers calls carrying an e-mail address; each decision arrives as one log record whose
body is the masked line the file holds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from helpers import Gateway, free_port, start_gateway
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

EMAIL = "otlp.leak@example.org"


@dataclass
class Received:
    service: str
    body: str
    attributes: dict[str, Any]


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.records: list[Received] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802
        with self.lock:
            for resource_logs in request.resource_logs:
                service = next(
                    (a.value.string_value for a in resource_logs.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource_logs.scope_logs:
                    for record in scope.log_records:
                        attributes = {
                            a.key: (a.value.int_value if a.value.HasField("int_value") else a.value.string_value)
                            for a in record.attributes
                        }
                        self.records.append(Received(service, record.body.string_value, attributes))
        return logs_service_pb2.ExportLogsServiceResponse()

    def wait(self, predicate: Callable[[Received], bool], timeout: float = 20.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [r for r in self.records if predicate(r)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError("no matching log record exported")


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.count = 0

    def Export(self, request, context):  # noqa: N802
        self.count += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def siem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, LogsReceiver, Path]]:
    receiver = LogsReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(receiver, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(SpanSink(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    root = tmp_path_factory.mktemp("otlp-logs")
    decisions = root / "decisions.jsonl"
    extra = {"telemetry": {"otlp_endpoint": f"127.0.0.1:{port}"}, "audit": {"path": str(decisions)}}
    gw = start_gateway(root / "gw", extra=extra)
    try:
        yield gw, receiver, decisions
    finally:
        gw.client.close()
        gw.stack.stop()
        server.stop(None)


def test_a_decision_arrives_as_an_otlp_log_record_with_masked_arguments(siem) -> None:
    gw, receiver, decisions = siem
    response = gw.call("POST", "payments.demo", "/v1/refunds", json={"amount": 20, "customer_id": EMAIL})
    assert response.status_code == 200
    decision_id = response.headers["x-aegis-decision-id"]
    record = receiver.wait(lambda r: r.attributes.get("aegis.decision_id") == decision_id)
    assert EMAIL not in record.body and EMAIL not in str(record.attributes)
    entry = json.loads(record.body)
    assert entry["type"] == "decision" and entry["decision_id"] == decision_id
    assert entry["input"]["tool"]["args"]["customer_id"] == "[REDACTED:EMAIL]"
    assert record.service == "aegis"
    assert record.attributes["aegis.log.type"] == "decision"
    assert record.attributes["aegis.agent"] == "support-bot"
    assert record.attributes["aegis.tool"] == "payments.refund"
    assert record.attributes["aegis.effect"] == "allow"
    assert record.attributes["aegis.policy_version"] == entry["policy_version"] != ""
    assert record.attributes["aegis.log.seq"] == entry["seq"]
    # The body is the line the file holds, byte for byte (chain fields included).
    assert record.body in decisions.read_text().splitlines()


def test_a_denied_call_carries_its_effect_and_rule(siem) -> None:
    gw, receiver, _ = siem
    response = gw.call("POST", "payments.demo", "/v1/refunds", json={"amount": 900, "customer_id": f"mail {EMAIL}"})
    assert response.status_code == 403
    decision_id = response.headers["x-aegis-decision-id"]
    record = receiver.wait(lambda r: r.attributes.get("aegis.decision_id") == decision_id)
    assert record.attributes["aegis.effect"] == "deny"
    assert record.attributes["aegis.rule"] == "refund-over-limit"
    assert record.attributes["aegis.policy_version"] == response.json()["policy_version"]
    assert EMAIL not in record.body


def _samples(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://{gw.config.service.http}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_export_counters_are_on_metrics(siem) -> None:
    gw, receiver, _ = siem
    receiver.wait(lambda r: r.attributes.get("aegis.log.type") == "header")
    exported = ("aegis_decision_log_otlp_exported_total", ()), ("aegis_spans_exported_total", ())
    deadline = time.monotonic() + 20
    samples = _samples(gw)
    while time.monotonic() < deadline and not all(samples.get(key) for key in exported):
        time.sleep(0.2)  # the counters move when an export returns
        samples = _samples(gw)
    assert all(samples.get(key) for key in exported), samples
    for name in ("aegis_spans_dropped_total", "aegis_decision_log_otlp_dropped_total"):
        assert not any(value for (n, _), value in samples.items() if n == name)
