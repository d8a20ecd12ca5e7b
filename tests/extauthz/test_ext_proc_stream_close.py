"""ext_proc closes its stream itself, cleanly, once the exchange needs nothing more.

Envoy then goes on without the processor; the alternative (Envoy resetting the stream at
the end of the HTTP exchange) makes grpc.aio leak native memory per stream.  Each case
feeds the messages Envoy would send and fails if the servicer asks for one more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extauthz.metadata import MD_REDACT, MD_TOOL
from fuzz.targets.ext_proc import Case, _Context, requests_of, servicer

JSON = {"content-type": "application/json"}
SANITIZE = {MD_REDACT: json.dumps({"fields": ["ssn"], "detectors": ["EMAIL"]})}
CLEAN = {MD_TOOL: "payments.refund"}  # ext_authz metadata without a redact obligation


class AskedForMore(AssertionError):
    pass


async def _exactly(requests: Sequence[pb.ProcessingRequest]) -> AsyncIterator[pb.ProcessingRequest]:
    for request in requests:
        yield request
    raise AskedForMore("the servicer waited for a message after the exchange was complete")


def answers(case: Case) -> list[pb.ProcessingResponse]:
    requests = requests_of(case)

    async def collect() -> list[pb.ProcessingResponse]:
        return [r async for r in servicer(case.settings).Process(_exactly(requests), _Context())]

    return asyncio.run(collect())


@pytest.mark.parametrize(
    "case",
    [
        # Nothing to redact either way: done after the request headers.
        Case(0, CLEAN, [("request_headers", JSON)]),
        # A local reply (no request phase seen): done after its response headers.
        Case(0, None, [("response_headers", JSON)]),
        # Redact the response: done after the (buffered) response body.
        Case(
            0,
            SANITIZE,
            [
                ("request_headers", JSON),
                ("request_body", b'{"a":"jane@example.com"}', True),
                ("response_headers", JSON),
                ("response_body", b'{"ssn":"123-45-6789"}', True),
            ],
        ),
        # A streamed response: done after the chunk that ends the stream.
        Case(
            0,
            SANITIZE,
            [
                ("request_headers", JSON),
                ("request_body", b"{}", True),
                ("response_headers", {"content-type": "text/event-stream"}),
                ("response_body", b"data: a\n\n", False),
                ("response_body", b"data: b\n\n", True),
            ],
        ),
        # The response-only instance: the stream starts at the response headers.
        Case(0, SANITIZE, [("response_headers", JSON), ("response_body", b'{"ssn":"1"}', True)]),
    ],
    ids=["clean", "local-reply", "buffered-response", "streamed-response", "response-only"],
)
def test_the_stream_closes_when_the_exchange_is_complete(case: Case):
    responses = answers(case)
    assert len(responses) == len(case.phases)  # every message answered, none asked for after
    assert [r.WhichOneof("response") for r in responses] == [p[0] for p in case.phases]
