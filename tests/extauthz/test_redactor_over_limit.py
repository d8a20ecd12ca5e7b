"""``redactor.Exchange`` at the size limit: 413 by default, unredacted only when the obligations
say ``over_limit: pass``; malformed obligations refuse the exchange (fail closed)."""

from __future__ import annotations

import json

import pytest

from extauthz.metadata import MD_REDACT, MD_TOOL
from extauthz.redactor import REDACTION_FAILED_STATUS, Exchange, RedactionSettings

SSN = "123-45-6789"
LIMIT = 64
BIG = json.dumps({"note": f"ssn {SSN}", "pad": "x" * 100}).encode()
SMALL = json.dumps({"ssn": SSN}).encode()


def exchange(obligations: object, **settings: object) -> Exchange:
    metadata = {MD_TOOL: "crm.get_record"}
    if obligations is not None:
        metadata[MD_REDACT] = obligations if isinstance(obligations, str) else json.dumps(obligations)
    return Exchange.from_metadata(RedactionSettings(max_body_bytes=LIMIT, **settings), metadata)  # type: ignore[arg-type]


def test_over_limit_is_refused_by_default() -> None:
    ex = exchange({"fields": ["ssn"], "detectors": ["SSN"]})
    for outcome in (ex.redact_request(BIG, "application/json"), ex.redact_response(BIG)):
        assert outcome.refusal == (413, "body_too_large", "the body is larger than Aegis redacts")
        assert not outcome.passed_over_limit
    assert ex.passed_over_limit == []


def test_over_limit_passes_unredacted_when_the_obligations_say_so() -> None:
    ex = exchange({"fields": ["ssn"], "detectors": ["SSN"], "over_limit": "pass"})
    ex.note_response_headers({"content-type": "application/json"})
    request = ex.redact_request(BIG, "application/json")
    response = ex.redact_response(BIG)
    for outcome in (request, response):
        assert outcome.refusal is None and outcome.body is None  # unchanged: the original goes on
        assert outcome.passed_over_limit
    assert ex.passed_over_limit == ["request", "response"]
    # under the limit it is redacted as always
    small = ex.redact_response(SMALL)
    assert small.body is not None and SSN not in small.body.decode()


def test_default_response_redaction_never_passes_on_its_own() -> None:
    ex = exchange(None, response_detectors=("SECRET",))
    assert ex.redact_response(BIG).refusal is not None


def test_an_over_limit_event_stream_passes_only_when_allowed() -> None:
    event = b"data: " + json.dumps({"ssn": SSN, "pad": "x" * 100}).encode()  # no end of event yet
    blocked = exchange({"fields": ["ssn"]})
    blocked.note_response_headers({"content-type": "text/event-stream"})
    assert blocked.redact_stream_chunk(event, end_of_stream=False).refusal is not None
    passed = exchange({"fields": ["ssn"], "over_limit": "pass"})
    passed.note_response_headers({"content-type": "text/event-stream"})
    outcome = passed.redact_stream_chunk(event, end_of_stream=False)
    assert outcome.refusal is None and outcome.passed_over_limit and outcome.body == event
    assert passed.passed_over_limit == ["response"]


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[]",
        '{"fields": "ssn"}',
        '{"fields": [1]}',
        '{"detectors": ["PASSPORT"]}',
        '{"fields": ["$.["]}',
    ],
)
def test_malformed_obligations_refuse_the_exchange(raw: str) -> None:
    ex = exchange(raw)
    assert ex.refusal is not None
    assert ex.refusal[0] == REDACTION_FAILED_STATUS and ex.refusal[1] == "redaction_failed"
