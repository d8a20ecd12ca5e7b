"""What the hot path keeps between calls instead of rebuilding it: metric children, read
obligations, the obligations' JSON, and which headers ext_proc decodes.  Each kept value must
be the value rebuilt from scratch."""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from prometheus_client import generate_latest

from extauthz.decision import Obligations
from extauthz.envoy_proc import REQUEST_HEADERS_READ, header_map
from extauthz.metadata import MD_REDACT
from extauthz.redactor import MALFORMED_OBLIGATIONS, Exchange, RedactionSettings, read_obligations
from extauthz.telemetry import Metrics
from fuzz.targets.ext_proc import Case, requests_of, servicer

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_kept_metric_child_is_the_labelled_child_and_counts_in_the_registry() -> None:
    metrics = Metrics()
    child = metrics.decisions_by("allow", "payments.refund", "refund-small")
    assert child is metrics.decisions.labels("allow", "payments.refund", "refund-small")
    assert metrics.decisions_by("allow", "payments.refund", "refund-small") is child
    child.inc()
    metrics.decisions_by("allow", "payments.refund", "refund-small").inc()
    metrics.redactions_by("SSN", "crm.get_record").inc(3)
    text = generate_latest(metrics.registry).decode()
    assert 'aegis_decisions_total{decision="allow",rule="refund-small",tool="payments.refund"} 2.0' in text
    assert 'aegis_redactions_total{detector="SSN",tool="crm.get_record"} 3.0' in text


def test_read_obligations_are_shared_and_equal_to_a_fresh_read() -> None:
    settings = RedactionSettings(response_detectors=("SECRET",))
    raw = json.dumps({"fields": ["ssn"], "detectors": ["EMAIL"], "over_limit": "pass"})
    first = read_obligations(raw, settings)
    assert read_obligations(raw, settings) is first
    read_obligations.cache_clear()
    again = read_obligations(raw, settings)
    assert again is not first and again == first
    request, response, over_limit_pass = again
    assert request is not None and request.fields == ("ssn",) and request.detectors == ("EMAIL",)
    assert response is not None and response.detectors == ("EMAIL", "SECRET") and over_limit_pass


@pytest.mark.parametrize("raw", ["{not json", "[1]", json.dumps({"fields": "ssn"})])
def test_malformed_obligations_are_refused_every_time(raw: str) -> None:
    for _ in range(2):  # a failed read is not kept as a success
        exchange = Exchange.from_metadata(RedactionSettings(), {MD_REDACT: raw})
        assert exchange.refusal == MALFORMED_OBLIGATIONS


def test_the_kept_redact_json_is_the_dumped_dict() -> None:
    obligations = Obligations(redact_fields=("ssn",), redact_detectors=("EMAIL",), redact_over_limit="pass")
    assert json.loads(obligations.redact_json) == obligations.redact_dict()
    assert obligations.redact_json is obligations.redact_json
    assert obligations == Obligations(redact_fields=("ssn",), redact_detectors=("EMAIL",), redact_over_limit="pass")


def test_header_map_decodes_only_the_headers_read() -> None:
    headers = pb.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
                base_pb2.HeaderValue(key="traceparent", raw_value=TRACEPARENT.encode()),
                base_pb2.HeaderValue(key="authorization", raw_value=b"Bearer secret"),
                base_pb2.HeaderValue(key="x-legacy", value="from value"),
            ]
        )
    )
    assert header_map(headers, REQUEST_HEADERS_READ) == {"content-type": "application/json", "traceparent": TRACEPARENT}
    assert header_map(headers)["x-legacy"] == "from value"


def test_the_request_headers_message_still_gives_the_trace_context_and_the_body_type() -> None:
    metadata = {MD_REDACT: json.dumps({"fields": [], "detectors": ["EMAIL"]})}
    form = {"content-type": "application/x-www-form-urlencoded", "traceparent": TRACEPARENT, "x-other": "1"}
    requests = requests_of(
        Case(0, metadata, [("request_headers", form), ("request_body", b"note=mail+jane.doe%40example.com", True)])
    )
    stream = servicer(0).open_stream(())
    stream.answer(requests[0])
    assert stream._exchange is not None and stream._exchange.trace_headers == {"traceparent": TRACEPARENT}
    [answer], _ = stream.answer(requests[1])
    body = answer.request_body.response.body_mutation.body
    assert b"jane.doe" not in body and body.startswith(b"note=")  # redacted as a form, not as text
