"""The response-only ext_proc instance: the stream starts at the response headers, so the
exchange is built from the metadata of whatever message comes first, and the agent's trace
context comes as attributes (no request headers message to read it from)."""

from __future__ import annotations

import asyncio
import json

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extauthz.metadata import MD_REDACT, TRACE_HEADER_ATTRIBUTES
from fuzz.targets.ext_proc import Case, _Context, requests_of, servicer

JSON = {"content-type": "application/json"}
SANITIZE = {MD_REDACT: json.dumps({"fields": ["ssn"], "detectors": ["EMAIL"]})}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def run(case: Case) -> list[pb.ProcessingResponse]:
    async def messages():
        for request in requests_of(case):
            yield request

    async def collect() -> list[pb.ProcessingResponse]:
        return [r async for r in servicer(case.settings).Process(messages(), _Context())]

    return asyncio.run(collect())


def test_the_response_is_redacted_with_a_matching_content_length() -> None:
    body = json.dumps({"ssn": "123-45-6789", "note": "mail jane.doe@example.com", "id": "r-1"}).encode()
    headers, answer = run(Case(0, SANITIZE, [("response_headers", JSON), ("response_body", body, True)]))
    assert headers.HasField("response_headers")
    common = answer.response_body.response
    record = json.loads(common.body_mutation.body)
    assert record["ssn"].startswith("[REDACTED") and "jane.doe@example.com" not in record["note"]
    [length] = [h.header.raw_value for h in common.header_mutation.set_headers if h.header.key == "content-length"]
    assert int(length) == len(common.body_mutation.body)


def test_an_event_stream_switches_to_streamed_at_its_headers() -> None:
    [answer] = run(Case(0, SANITIZE, [("response_headers", {"content-type": "text/event-stream"})]))
    assert answer.mode_override.response_body_mode == answer.mode_override.STREAMED


def test_the_trace_context_comes_from_the_attributes() -> None:
    [request] = requests_of(Case(0, SANITIZE, [("response_headers", JSON)]))
    request.attributes["envoy.filters.http.ext_proc"].update({TRACE_HEADER_ATTRIBUTES["traceparent"]: TRACEPARENT})
    stream = servicer(0).open_stream(())
    stream.answer(request)
    assert stream._exchange is not None and stream._exchange.trace_headers == {"traceparent": TRACEPARENT}


def test_malformed_obligations_are_refused_at_the_first_message_whatever_it_is() -> None:
    [answer] = run(Case(0, {MD_REDACT: "{not json"}, [("response_headers", JSON), ("response_body", b"{}", True)]))
    assert answer.immediate_response.status.code == 502
