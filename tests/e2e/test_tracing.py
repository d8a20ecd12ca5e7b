"""OTLP export end to end: Envoy's span → the service's decision span, in one trace.

A real OTLP/gRPC receiver (the collector's TraceService) collects what Envoy and the
service export; this also proves the OTLP exporter works beside xds-protos, which ships its
own copy of the opentelemetry/proto package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from helpers import Gateway, free_port, start_gateway
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

pytestmark = pytest.mark.e2e


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []  # (service.name, span)
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802
        with self.lock:
            for resource_spans in request.resource_spans:
                name = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
                )
                for scope in resource_spans.scope_spans:
                    self.spans.extend((name, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait(self, predicate, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError("no matching span exported")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Receiver]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    gw = start_gateway(tmp_path_factory.mktemp("traced"), extra={"telemetry": {"otlp_endpoint": f"127.0.0.1:{port}"}})
    try:
        yield gw, receiver
    finally:
        gw.client.close()
        gw.stack.stop()
        server.stop(None)


def attributes(span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_a_call_produces_a_connected_trace(traced):
    gw, receiver = traced
    response = gw.call(
        "POST", "payments.demo", "/v1/refunds", json={"amount": 900, "currency": "USD", "customer_id": "c-1"}
    )
    assert response.status_code == 403
    decision_id = response.headers["x-aegis-decision-id"]
    ((_, decision),) = receiver.wait(
        lambda s: s[0] == "aegis" and attributes(s[1]).get("aegis.decision_id") == decision_id
    )
    attrs = attributes(decision)
    assert attrs["aegis.decision"] == "deny"
    assert attrs["aegis.rule"] == "refund-over-limit"
    assert attrs["aegis.agent_id"] == attrs["gen_ai.agent.id"] == "support-bot"
    assert attrs["aegis.tool"] == attrs["gen_ai.tool.name"] == "payments.refund"
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["aegis.policy_version"] == response.json()["policy_version"]
    assert "c-1" not in str(decision.attributes)
    # Its parent is one of Envoy's spans in the same trace.
    envoy = receiver.wait(lambda s: s[0] == "envoy-aegis" and s[1].trace_id == decision.trace_id)
    assert decision.parent_span_id in {span.span_id for _, span in envoy}


def test_redaction_spans_carry_counts_only(traced):
    gw, receiver = traced
    response = gw.call("GET", "crm.demo", "/tenants/acme/records/r-1", headers={"x-aegis-purpose": "support"})
    assert response.status_code == 200
    spans = receiver.wait(lambda s: s[0] == "aegis" and s[1].name == "aegis.redaction")
    attrs = {a.key: a.value for a in spans[-1][1].attributes}
    assert attrs["aegis.tool"].string_value == "crm.get_record"
    assert any(k.startswith("aegis.redactions.") for k in attrs)
    assert "123-45-6789" not in str(spans[-1][1])
