"""Check redacts a request body itself and hands the outcome over in its metadata.  Behind a
bootstrap with the Lua filter (which says so in the Check's gRPC metadata), Envoy puts the
body in place and Check names the response-only instance: two ext_proc messages.  Behind an
older one, the answer to the request headers carries the new body (CONTINUE_AND_REPLACE) and
no request body message follows: three, not four.  Whatever Check cannot do (limits,
refusals, malformed text) is left to the request body message, as before.  Through real
Envoy: tests/e2e/test_dlp_gateway.py, tests/envoyconfig/test_envoyconfig_e2e.py."""

from __future__ import annotations

import asyncio
import functools
import json

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extauthz.answer import Answer
from extauthz.envoy_authz import AuthorizationServicer, envoy_puts_request_body
from extauthz.envoy_proc import _RESPONSE_ONLY
from extauthz.grpc_front import CallContext
from extauthz.metadata import (
    FEATURE_REQUEST_BODY_FILTER,
    GRPC_ENVOY_FEATURES,
    MAX_REQUEST_BODY_HANDED,
    MD_BODY_PHASES,
    MD_REDACT,
    MD_REDACTIONS,
    MD_REQUEST_BODY,
    MD_REQUEST_REDACTED,
    MD_TOOL,
    PHASES_BOTH_BODIES,
    PHASES_RESPONSE,
)
from extauthz.redactor import RedactionSettings, redact_request_in_check
from extauthz.tools import HttpRequest
from fuzz.targets.ext_proc import Case, _Context, requests_of, servicer

JSON = "application/json"
SSN, EMAIL = "123-45-6789", "jane.doe@example.com"
SANITIZE = {MD_REDACT: json.dumps({"fields": ["ssn"], "detectors": ["EMAIL"]})}
POST = json.dumps({"channel": "#support", "text": f"mail {EMAIL}", "ssn": SSN}).encode()


def handed(body: bytes = POST, metadata: dict[str, str] = SANITIZE, **settings: object) -> dict[str, str]:
    return dict(redact_request_in_check(RedactionSettings(**settings), metadata, body, JSON))  # type: ignore[arg-type]


def test_check_hands_over_the_redacted_body_and_its_counts() -> None:
    metadata = handed()
    sent = json.loads(metadata[MD_REQUEST_BODY])
    assert sent["ssn"].startswith("[REDACTED") and EMAIL not in sent["text"]
    assert sent["channel"] == "#support"
    assert metadata[MD_REQUEST_REDACTED] == "EMAIL:1,SSN:1"  # types and numbers, never values


def test_a_body_with_nothing_to_redact_is_handed_over_as_unchanged() -> None:
    metadata = handed(json.dumps({"channel": "#support", "text": "all good"}).encode())
    assert metadata == {MD_REQUEST_REDACTED: ""}  # nothing found; no body to replace


@pytest.mark.parametrize(
    ("body", "metadata", "settings"),
    [
        (POST, SANITIZE, {"max_body_bytes": 32}),  # over dlp.max_body_bytes: 413 or pass, as before
        (json.dumps({"text": "x" * MAX_REQUEST_BODY_HANDED}).encode(), SANITIZE, {}),  # too big to hand over
        (POST, {MD_REDACT: "{not json"}, {}),  # malformed obligations: ext_proc refuses (502)
        (POST, {}, {}),  # no rule obligations
        (b"", SANITIZE, {}),  # no body
        (b"\x00\x01binary\xff", SANITIZE, {"on_binary": "block"}),  # a refusal: ext_proc answers it
    ],
)
def test_what_check_cannot_do_is_left_to_the_request_body_message(
    body: bytes, metadata: dict[str, str], settings: dict[str, object]
) -> None:
    assert handed(body, metadata, **settings) == {}


def run(case: Case) -> list[pb.ProcessingResponse]:
    async def messages():
        for request in requests_of(case):
            yield request

    async def collect() -> list[pb.ProcessingResponse]:
        return [r async for r in servicer(case.settings).Process(messages(), _Context())]

    return asyncio.run(collect())


def test_the_request_headers_answer_carries_the_body_and_no_body_message_is_asked_for() -> None:
    metadata = {**SANITIZE, **handed()}
    response_body = json.dumps({"ok": True, "note": f"from {EMAIL}"}).encode()
    phases = [
        ("request_headers", {"content-type": JSON}),
        ("response_headers", {}),
        ("response_body", response_body, True),
    ]
    request_answer, _, body_answer = run(Case(0, metadata, phases))
    common = request_answer.request_headers.response
    assert common.status == pb.CommonResponse.CONTINUE_AND_REPLACE
    assert common.body_mutation.body == metadata[MD_REQUEST_BODY].encode()
    assert request_answer.mode_override == _RESPONSE_ONLY  # request body NONE, response BUFFERED
    # The access log's counts cover both bodies: the request's from Check, the response's here.
    counts = body_answer.dynamic_metadata.fields["envoy.filters.http.ext_proc"].struct_value.fields
    found = dict(item.split(":") for item in counts[MD_REDACTIONS].string_value.split(","))
    assert found["EMAIL"] == "2"


def test_an_unchanged_request_body_is_left_as_sent() -> None:
    metadata = {**SANITIZE, MD_REQUEST_REDACTED: ""}
    [answer] = run(Case(0, metadata, [("request_headers", {"content-type": JSON})]))
    assert answer.request_headers.response.status == pb.CommonResponse.CONTINUE
    assert not answer.request_headers.response.HasField("body_mutation")
    assert answer.mode_override == _RESPONSE_ONLY


@pytest.mark.parametrize("counts", ["EMAIL:one", "EMAIL"])
def test_counts_it_cannot_read_are_refused_not_passed(counts: str) -> None:
    metadata = {**SANITIZE, MD_REQUEST_REDACTED: counts, MD_REQUEST_BODY: "{}"}
    [answer] = run(Case(0, metadata, [("request_headers", {"content-type": JSON}), ("request_body", POST, True)]))
    assert answer.immediate_response.status.code == 502


def test_without_rule_obligations_a_handed_body_is_ignored() -> None:
    # Only a call with rule obligations redacts its request: metadata that says otherwise
    # cannot replace a body ext_proc was not asked to change.
    metadata = {MD_REQUEST_REDACTED: "", MD_REQUEST_BODY: '{"forged": true}'}
    answers = run(Case(0, metadata, [("request_headers", {"content-type": JSON})]))
    assert not answers[0].request_headers.response.HasField("body_mutation")


class _FixedAuthorizer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def check(self, request: HttpRequest) -> Answer:
        return self.answer


def respond(answer: Answer, body: bytes, *, envoy_puts_request_body: bool = False) -> dict[str, str]:
    redact = functools.partial(redact_request_in_check, RedactionSettings())
    servicer = AuthorizationServicer(_FixedAuthorizer(answer), redact_request=redact)  # type: ignore[arg-type]
    request = HttpRequest("POST" if body else "GET", "slack.demo", "/p", "", {"content-type": JSON}, body)
    response = servicer.respond(answer, request, envoy_puts_request_body=envoy_puts_request_body)
    return {key: value.string_value for key, value in response.dynamic_metadata.fields.items()}


def test_behind_the_lua_filter_check_names_the_response_only_instance() -> None:
    metadata = respond(Answer(200, "d-1", metadata=SANITIZE), POST, envoy_puts_request_body=True)
    assert metadata[MD_BODY_PHASES] == PHASES_RESPONSE
    assert SSN not in metadata[MD_REQUEST_BODY] and metadata[MD_REQUEST_REDACTED] == "EMAIL:1,SSN:1"
    # Nothing to change: still handed over as redacted (no body to put in place).
    clean = json.dumps({"channel": "#support", "text": "all good"}).encode()
    metadata = respond(Answer(200, "d-1", metadata=SANITIZE), clean, envoy_puts_request_body=True)
    assert metadata[MD_BODY_PHASES] == PHASES_RESPONSE and MD_REQUEST_BODY not in metadata
    # A body Check cannot hand over still needs both bodies: the request body message redacts it.
    big = json.dumps({"text": f"{SSN} " + "x" * MAX_REQUEST_BODY_HANDED}).encode()
    metadata = respond(Answer(200, "d-1", metadata=SANITIZE), big, envoy_puts_request_body=True)
    assert metadata[MD_BODY_PHASES] == PHASES_BOTH_BODIES and MD_REQUEST_REDACTED not in metadata


@pytest.mark.parametrize(
    ("grpc_metadata", "puts"),
    [
        ([(GRPC_ENVOY_FEATURES, FEATURE_REQUEST_BODY_FILTER)], True),
        (
            [("x-envoy-expected-rq-timeout-ms", "1000"), (GRPC_ENVOY_FEATURES, f"other,{FEATURE_REQUEST_BODY_FILTER}")],
            True,
        ),
        ([(GRPC_ENVOY_FEATURES, "request-body-filter-v0")], False),  # a name, not a prefix
        ([("x-aegis-other", FEATURE_REQUEST_BODY_FILTER)], False),
        ([], False),
    ],
)
def test_only_the_bootstraps_own_claim_says_envoy_puts_the_body(
    grpc_metadata: list[tuple[str, str]], puts: bool
) -> None:
    assert envoy_puts_request_body(CallContext(grpc_metadata, "peer")) is puts  # type: ignore[arg-type]
    assert envoy_puts_request_body(None) is False


def test_a_response_only_stream_counts_the_request_check_redacted_once() -> None:
    metadata = {**SANITIZE, MD_TOOL: "slack.post", **handed()}
    processor = servicer(0)
    count = processor.metrics.registry.get_sample_value
    labels = {"detector": "SSN", "tool": "slack.post"}
    before = count("aegis_redactions_total", labels) or 0.0
    response_body = json.dumps({"ok": True, "note": f"from {EMAIL}"}).encode()
    phases = [("response_headers", {"content-type": JSON}), ("response_body", response_body, True)]
    _, body_answer = run(Case(0, metadata, phases))
    counts = body_answer.dynamic_metadata.fields["envoy.filters.http.ext_proc"].struct_value.fields
    found = dict(item.split(":") for item in counts[MD_REDACTIONS].string_value.split(","))
    assert found == {"EMAIL": "2", "SSN": "1"}  # the request's (from Check) and the response's
    assert count("aegis_redactions_total", labels) == before + 1


def test_check_redacts_the_request_only_when_both_bodies_are_processed() -> None:
    metadata = respond(Answer(200, "d-1", metadata=SANITIZE), POST)
    assert metadata[MD_BODY_PHASES] == PHASES_BOTH_BODIES
    assert SSN not in metadata[MD_REQUEST_BODY]
    # No request body: the response-only instance, nothing to hand over.
    metadata = respond(Answer(200, "d-1", metadata=SANITIZE), b"")
    assert metadata[MD_BODY_PHASES] == PHASES_RESPONSE and MD_REQUEST_REDACTED not in metadata
    # A denial carries no redacted body (Envoy answers the agent itself).
    metadata = respond(Answer(403, "d-1", body={"error": "denied"}, metadata=SANITIZE), POST)
    assert MD_REQUEST_BODY not in metadata and MD_REQUEST_REDACTED not in metadata
